//! `otel-audit backup` and `otel-audit restore`: one incremental, create-only
//! copy between two stores, then a verification of the copy.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::Utc;
use clap::{Arg, Args};
use indicatif::{ProgressBar, ProgressStyle};
use otel_audit_storage::copy::{CopyOptions, CopyProgress, CopyReport, ObjectOutcome, copy_store};
use otel_audit_storage::{PublicKeys, Store, VerifyOptions, VerifyReport, verify};

use crate::{
    BarProgress, EXIT_OK, EXIT_PROBLEMS, S3Flags, human_bytes, parse_time, print_report,
    progress_bar,
};

/// Which way the copy goes; the copy itself is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the audit store to a backup.
    Backup,
    /// From a backup to an audit store.
    Restore,
}

/// Flags of `backup` and `restore`; each subcommand renames `--from`/`--to`
/// for its direction with [`backup_from`] and friends.
#[derive(Args)]
pub struct BackupArgs {
    /// The store to copy from: a path, file:///abs/path, s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    from: String,
    /// The store to copy to (created if missing; existing objects are never overwritten).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Compare objects already in the destination by SHA-256 (reads both copies), not only by size.
    #[arg(long)]
    checksum: bool,
    /// Do not verify the destination after copying.
    #[arg(long)]
    no_verify: bool,
    /// Trusted public key (PEM) for digest signatures, checked when verifying the copy; repeatable.
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Verify that digests were made up to this time (RFC 3339 or YYYY-MM-DD, UTC); default:
    /// now for backup, when the backup was last written for restore.
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
    /// Print the copy and verification report as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Flags,
}

/// `--from`/`--to` as `backup` names them.
pub fn backup_from(a: Arg) -> Arg {
    a.value_name("STORE_URL")
        .help("The audit store to back up: a path, file:///abs/path, s3://bucket/prefix")
}

/// See [`backup_from`].
pub fn backup_to(a: Arg) -> Arg {
    a.value_name("BACKUP_URL").help(
        "Where the backup goes (created if missing; objects already there are skipped, never overwritten)",
    )
}

/// `--from`/`--to` as `restore` names them.
pub fn restore_from(a: Arg) -> Arg {
    a.value_name("BACKUP_URL")
        .help("The backup to restore from (what `otel-audit backup --to` wrote)")
}

/// See [`restore_from`].
pub fn restore_to(a: Arg) -> Arg {
    a.value_name("STORE_URL").help(
        "The audit store to restore into (created if missing; objects already there are skipped, never overwritten)",
    )
}

/// Copies `--from` to `--to`, then verifies `--to` unless `--no-verify`.
/// Returns the exit code: 0 copied (and intact), 1 integrity problems in the
/// copy; errors (including a conflicting object in the destination) are exit 2.
pub async fn cmd_backup(a: BackupArgs, direction: Direction) -> anyhow::Result<u8> {
    let as_of = a
        .as_of
        .as_deref()
        .map(|s| parse_time("--as-of", s))
        .transpose()?;
    let mut keys = PublicKeys::new();
    for path in &a.public_keys {
        keys.load(path)
            .with_context(|| format!("--public-key {}", path.display()))?;
    }
    let options = a.s3.options();
    // Opening a local store creates its directory: a mistyped --from would
    // otherwise be created, empty, instead of reported.
    if let Some(dir) = local_dir(&a.from)
        && !std::path::Path::new(dir).is_dir()
    {
        bail!("--from {}: no such directory", a.from.trim());
    }
    let from = Store::open(&a.from, &options).context("--from")?;
    let to = Store::open(&a.to, &options).context("--to")?;

    let copy_opts = CopyOptions {
        verify_bytes: a.checksum,
        ..CopyOptions::default()
    };
    let started = Utc::now();
    let t0 = Instant::now();
    let bar = CopyBar::new();
    let copied = copy_store(&from, &to, &copy_opts, &bar).await;
    bar.bar.finish_and_clear();
    let copy = copied?;
    let copy_secs = t0.elapsed().as_secs_f64();
    if !a.json {
        print_copy(&copy, copy_secs);
    }

    let report = if a.no_verify {
        None
    } else {
        let opts = VerifyOptions {
            keys,
            // A backup holds the store as it was when copied; a backup being
            // restored, as it was when last written to. Digests due later
            // than that are not missing from it.
            as_of: Some(as_of.unwrap_or(match direction {
                Direction::Backup => started,
                Direction::Restore => copy.newest_object.unwrap_or(started),
            })),
            ..VerifyOptions::default()
        };
        let pb = BarProgress(progress_bar(0, "verifying the copy"));
        let t1 = Instant::now();
        let result = verify(&to, &opts, &pb).await;
        pb.0.finish_and_clear();
        let report = result.with_context(|| format!("verifying the copy in {}", to.url()))?;
        let secs = t1.elapsed().as_secs_f64();
        if !a.json {
            print_report(&report, secs);
        }
        Some((report, secs))
    };

    if a.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            copy: &'a CopyReport,
            seconds: f64,
            verified: bool,
            intact: Option<bool>,
            verify: Option<&'a VerifyReport>,
        }
        let out = Out {
            copy: &copy,
            seconds: copy_secs,
            verified: report.is_some(),
            intact: report.as_ref().map(|(r, _)| r.is_intact()),
            verify: report.as_ref().map(|(r, _)| r),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(match report {
        Some((r, _)) if !r.is_intact() => EXIT_PROBLEMS,
        _ => EXIT_OK,
    })
}

/// The directory of a local store URL (a path or `file://`), if it is one.
pub(crate) fn local_dir(url: &str) -> Option<&str> {
    let url = url.trim();
    match url.strip_prefix("file://") {
        Some(path) => Some(path),
        None if url.contains("://") || url == "memory:" => None,
        None => Some(url),
    }
}

fn print_copy(c: &CopyReport, secs: f64) {
    println!(
        "{} -> {}: copied {} of {} objects ({}), {} already there, in {secs:.2}s",
        c.from,
        c.to,
        c.copied,
        c.objects,
        human_bytes(c.bytes_copied),
        c.skipped,
    );
}

/// A byte-counting bar on a terminal (stderr), hidden when piped.
struct CopyBar {
    bar: ProgressBar,
    copied: AtomicU64,
    skipped: AtomicU64,
}

impl CopyBar {
    fn new() -> CopyBar {
        let bar = if std::io::stderr().is_terminal() {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template(
                    "{spinner} copying [{bar:30}] {binary_bytes}/{binary_total_bytes} {msg} ({eta})",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            pb
        } else {
            ProgressBar::hidden()
        };
        CopyBar {
            bar,
            copied: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }
}

impl CopyProgress for CopyBar {
    fn start(&self, _objects: u64, bytes: u64) {
        self.bar.set_length(bytes);
    }

    fn object_done(&self, _path: &str, bytes: u64, outcome: ObjectOutcome) {
        let counter = match outcome {
            ObjectOutcome::Copied => &self.copied,
            ObjectOutcome::Skipped => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bar.inc(bytes);
        self.bar.set_message(format!(
            "{} copied, {} already there",
            self.copied.load(Ordering::Relaxed),
            self.skipped.load(Ordering::Relaxed)
        ));
    }
}
