//! `otel-audit prune --dry-run`: what retention would delete, and what legal
//! holds keep.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use otel_audit_storage::Store;
use otel_audit_storage::retention::{RetentionPolicy, RetentionRule, plan};

use crate::{EXIT_OK, S3Flags, human_bytes, parse_time};

#[derive(Args)]
pub(crate) struct PruneArgs {
    /// The store: a path, file:///abs/path, s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    store: String,
    /// Rules and legal holds (YAML: `rules: [{tenant?, category?, days}]`,
    /// `legal_holds: [{name, reason, tenant?, category?, path_prefix?}]`),
    /// or a collector config whose `retention:` section holds them.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// A rule on the command line: `days`, `category=days`, `tenant/category=days`
    /// or `tenant/=days`; repeatable, added to --rules.
    #[arg(long = "keep", value_name = "RULE")]
    keep: Vec<String>,
    /// Only list what would be deleted (required: the collector deletes, as
    /// it records each deletion in the chain first).
    #[arg(long)]
    dry_run: bool,
    /// Judge expiry as of this time instead of now.
    #[arg(long, value_name = "TIME")]
    as_of: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Flags,
}

fn parse_keep(s: &str) -> anyhow::Result<RetentionRule> {
    let bad = || {
        anyhow::anyhow!(
            "--keep {s:?}: expected DAYS, CATEGORY=DAYS, TENANT/CATEGORY=DAYS or TENANT/=DAYS"
        )
    };
    let (scope, days) = match s.split_once('=') {
        Some((scope, days)) => (scope, days),
        None => ("", s),
    };
    let days: u32 = days.trim().parse().map_err(|_| bad())?;
    let (tenant, category) = match scope.split_once('/') {
        Some((t, c)) => (Some(t.to_owned()), c),
        None => (None, scope),
    };
    let category = if category.is_empty() {
        None
    } else {
        Some(
            category
                .parse()
                .map_err(|e| anyhow::anyhow!("--keep {s:?}: {e}"))?,
        )
    };
    Ok(RetentionRule {
        tenant,
        category,
        days,
    })
}

fn load_rules(path: &PathBuf) -> anyhow::Result<RetentionPolicy> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--rules {}", path.display()))?;
    let value: serde_norway::Value = serde_norway::from_str(&text)
        .with_context(|| format!("--rules {}: not YAML", path.display()))?;
    let mut section = value.get("retention").cloned().unwrap_or(value);
    // A collector config's section also says when retention runs, which a
    // plan does not need.
    if let Some(map) = section.as_mapping_mut() {
        map.remove("enabled");
        map.remove("interval_secs");
    }
    serde_norway::from_value(section).with_context(|| format!("--rules {}", path.display()))
}

pub(crate) async fn cmd_prune(a: PruneArgs) -> anyhow::Result<u8> {
    if !a.dry_run {
        bail!(
            "prune deletes nothing by itself: the collector deletes expired files (retention.enabled), \
             recording each deletion in the chain first. Add --dry-run to see what would go"
        );
    }
    let mut policy = match &a.rules {
        Some(p) => load_rules(p)?,
        None => RetentionPolicy::default(),
    };
    for k in &a.keep {
        policy.rules.push(parse_keep(k)?);
    }
    if policy.rules.is_empty() {
        bail!("no retention rules: give --rules FILE or --keep RULE");
    }
    policy.validate().context("retention rules")?;
    let now = match &a.as_of {
        Some(t) => parse_time("--as-of", t)?,
        None => chrono::Utc::now(),
    };
    let store = Store::open(&a.store, &a.s3.options())?;
    let plan = plan(&store, &policy, now).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(EXIT_OK);
    }
    for f in &plan.files {
        println!(
            "would delete {} (chain {}, seq {}..={}, {}, expired {})",
            f.path,
            f.chain_id,
            f.first_seq,
            f.last_seq,
            human_bytes(f.bytes),
            f.expired_at.to_rfc3339()
        );
    }
    for d in &plan.digests {
        println!("would delete digest {} (all its files are gone)", d.path);
    }
    for h in &plan.held {
        println!("held: {} (legal hold {:?}: {})", h.path, h.hold, h.reason);
    }
    println!(
        "dry run: {} files ({}) and {} digests would be deleted, {} expired files held, {} files kept",
        plan.files.len(),
        human_bytes(plan.files.iter().map(|f| f.bytes).sum()),
        plan.digests.len(),
        plan.held.len(),
        plan.files_kept
    );
    Ok(EXIT_OK)
}
