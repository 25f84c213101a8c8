//! `otel-audit report`: one self-contained HTML page (or Markdown) for a
//! period: the integrity verdict of `verify` over the same range, then what
//! happened — activity by category, outcomes, top actors, model and token
//! use, safety failures and blocks, administrative actions.
//!
//! The records are streamed once into bounded counters ([`aggregate`]); the
//! content is laid out once as [`Section`]s of charts and tables, which
//! [`html`] and [`markdown`] render.

mod aggregate;
mod html;
mod markdown;
mod svg;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, TimeZone, Utc};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use otel_audit_event::{ActorType, Category, Outcome};
use otel_audit_storage::{
    ReadError, Store, TimeRange, VerifyError, VerifyOptions, VerifyReport, read_records, verify,
};

use crate::{
    BarProgress, EXIT_OK, EXIT_PROBLEMS, Period, S3Flags, check_tenant, load_public_keys,
    progress_bar,
};
use aggregate::{AdminGroup, Aggregate, NCAT, NOUT};
use svg::{Series, fmt_int};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One self-contained HTML page with charts.
    Html,
    /// The same tables as Markdown, for tickets.
    Markdown,
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The store: a path, file:///abs/path, s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    store: String,
    #[command(flatten)]
    period: Period,
    /// Where to write the report; `-` or none: stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// html: a self-contained page with charts; markdown: the tables, for tickets.
    #[arg(long, value_enum, default_value_t = Format::Html)]
    format: Format,
    /// A trusted public key (PEM) for digest signatures; repeat for keys
    /// rotated out. Without one, signatures are not checked (the report says so).
    #[arg(long = "public-key", value_name = "FILE")]
    public_keys: Vec<PathBuf>,
    /// Only this tenant's events (and its chains' integrity problems).
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
    /// The report's title.
    #[arg(long, value_name = "TEXT", default_value = "AI audit trail report")]
    title: String,
    #[command(flatten)]
    s3: S3Flags,
}

/// What `verify` said about the period.
#[derive(Debug, Clone)]
pub(crate) enum Integrity {
    /// Verification ran (scoped to the tenant, with `--tenant`).
    Checked(Box<VerifyReport>),
    /// The store holds no data in the period, so there was nothing to verify.
    NoData,
}

/// Everything a report shows, before rendering.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    /// The title.
    pub title: String,
    /// The store's URL (without credentials).
    pub store: String,
    /// The tenant the report is limited to.
    pub tenant: Option<String>,
    /// The period asked for.
    pub range: TimeRange,
    /// When the report was made.
    pub generated: DateTime<Utc>,
    /// The integrity verdict.
    pub integrity: Integrity,
    /// The counts.
    pub agg: Aggregate,
}

/// A table of a section, as plain text cells: each renderer escapes them.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// What the table shows.
    pub caption: String,
    /// Column headings.
    pub headers: Vec<&'static str>,
    /// Which columns hold numbers (right-aligned).
    pub numeric: Vec<bool>,
    /// The rows.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    fn new(caption: impl Into<String>, headers: &[(&'static str, bool)]) -> Table {
        Table {
            caption: caption.into(),
            headers: headers.iter().map(|h| h.0).collect(),
            numeric: headers.iter().map(|h| h.1).collect(),
            rows: Vec::new(),
        }
    }
}

/// The first `max` of a verification's problems: kind, then place and detail.
pub(crate) fn problems_table(v: &VerifyReport, max: usize) -> Table {
    let mut t = Table::new(
        if v.problems.len() > max {
            format!("The first {max} of {} problems", v.problems.len())
        } else {
            "Problems".to_owned()
        },
        &[("Kind", false), ("Where and what", false)],
    );
    for p in v.problems.iter().take(max) {
        let text = p.to_string();
        let rest = text
            .strip_prefix(p.kind.as_str())
            .unwrap_or(&text)
            .trim_start();
        t.rows
            .push(vec![p.kind.as_str().to_owned(), rest.to_owned()]);
    }
    t
}

/// One chart section: a heading, a sentence, charts (HTML only) and tables.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// The element id (`chart-activity`, ...), stable for tests and links.
    pub id: &'static str,
    /// The heading.
    pub title: &'static str,
    /// A sentence summing the section up.
    pub lead: String,
    /// `(caption, svg)` pairs.
    pub charts: Vec<(String, String)>,
    /// The numbers behind the charts.
    pub tables: Vec<Table>,
}

/// Rows shown in top-N charts and tables.
const TOP: usize = 15;

pub(crate) async fn cmd_report(a: ReportArgs) -> anyhow::Result<u8> {
    let range = a.period.range()?;
    check_tenant(a.tenant.as_deref())?;
    let keys = load_public_keys(&a.public_keys)?;
    if let Some(path) = out_file(&a.out)
        && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        bail!(
            "--out {}: no such directory {}",
            path.display(),
            dir.display()
        );
    }
    // Opening a local store creates its directory: a mistyped path would
    // otherwise give an empty report instead of an error.
    if let Some(dir) = crate::backup::local_dir(&a.store)
        && !Path::new(dir).is_dir()
    {
        bail!("--store {}: no such directory", a.store.trim());
    }
    let store = Store::open(&a.store, &a.s3.options()).context("--store")?;

    let t0 = Instant::now();
    let opts = VerifyOptions {
        range,
        keys,
        tenant: a.tenant.clone(),
        ..VerifyOptions::default()
    };
    let pb = BarProgress(progress_bar(0, "verifying"));
    let tenant = a.tenant.as_deref();
    let counting = async {
        let mut agg = Aggregate::default();
        let mut records = std::pin::pin!(read_records(&store, range));
        while let Some(r) = records.next().await {
            match r {
                Ok(r) if tenant.is_none_or(|t| r.event.tenant == t) => agg.add(r),
                Ok(_) => {}
                // Verify reports the file (unreadable_file); the report
                // counts what can be read, and says what it could not.
                Err(ReadError::Decode { .. }) => agg.unreadable_files += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(agg)
    };
    // Both read every file of the period; on S3 running them together
    // overlaps their requests.
    let (verified, counted) = tokio::join!(verify(&store, &opts, &pb), counting);
    pb.0.finish_and_clear();
    // Store errors name the store and the object already.
    let agg = counted?;
    let integrity = match verified {
        // Digests elsewhere in the store make verify run, over nothing.
        Ok(r) if r.files_verified == 0 && r.is_intact() => Integrity::NoData,
        Ok(r) => Integrity::Checked(Box::new(r)),
        Err(VerifyError::NothingToVerify { .. }) => Integrity::NoData,
        Err(e) => return Err(e.into()),
    };
    let report = Report {
        title: a.title.clone(),
        store: store.url().to_owned(),
        tenant: a.tenant.clone(),
        range,
        generated: Utc::now(),
        integrity,
        agg,
    };
    let text = match a.format {
        Format::Html => html::render(&report),
        Format::Markdown => markdown::render(&report),
    };
    match out_file(&a.out) {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("--out {}", path.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the report to stdout")?;
        }
    }
    let verdict = match &report.integrity {
        Integrity::Checked(r) if r.is_intact() => "intact".to_owned(),
        Integrity::Checked(r) => format!("INTEGRITY PROBLEMS: {} found", r.problems.len()),
        Integrity::NoData => "no data in the period".to_owned(),
    };
    eprintln!(
        "report on {} events, {verdict}, written to {} in {:.1}s",
        fmt_int(report.agg.events),
        out_file(&a.out).map_or("stdout".into(), |p| p.display().to_string()),
        t0.elapsed().as_secs_f64()
    );
    Ok(match &report.integrity {
        Integrity::Checked(r) if !r.is_intact() => EXIT_PROBLEMS,
        _ => EXIT_OK,
    })
}

/// `--out`, unless it is `-` (stdout).
fn out_file(out: &Option<PathBuf>) -> Option<&Path> {
    out.as_deref().filter(|p| p.as_os_str() != "-")
}

impl Report {
    /// The period shown: the range asked for, its open ends closed by the
    /// data (whole hours), or `None` when both are unknown.
    pub(crate) fn period(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        let from = self.range.from.or(self.agg.first.map(floor_hour))?;
        let to = self
            .range
            .to
            .or(self.agg.last.map(|t| floor_hour(t) + Duration::hours(1)))?;
        Some((from, to.max(from)))
    }

    /// The period as text: `2026-01-05 00:00 – 2026-01-05 06:00 UTC`.
    pub(crate) fn period_text(&self) -> String {
        let f = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M").to_string();
        match (self.range.from, self.range.to, self.period()) {
            (None, None, None) => "all time (the store holds no events)".to_owned(),
            (_, _, Some((from, to))) => {
                let mut s = format!("{} – {} UTC", f(from), f(to));
                if self.range.from.is_none() || self.range.to.is_none() {
                    s.push_str(" (open ends bounded by the first and last event)");
                }
                s
            }
            (from, to, None) => format!(
                "{} – {} UTC",
                from.map_or("the beginning".into(), f),
                to.map_or("now".into(), f)
            ),
        }
    }

    /// The verdict's problem kinds with their counts, most frequent first.
    pub(crate) fn problem_kinds(&self) -> Vec<(&'static str, u64)> {
        let Integrity::Checked(r) = &self.integrity else {
            return Vec::new();
        };
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        for p in &r.problems {
            *counts.entry(p.kind.as_str()).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    /// Caveats of an intact verdict: no digests, unchecked signatures.
    pub(crate) fn integrity_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.agg.unreadable_files > 0 {
            notes.push(format!(
                "{} data file(s) could not be read: their events are not counted in the figures below.",
                self.agg.unreadable_files
            ));
        }
        let Integrity::Checked(r) = &self.integrity else {
            return notes;
        };
        let d = &r.digests;
        if d.digests == 0 {
            notes.push(
                "No signed digests: the rows' hash chains were verified, but deleting the newest \
                 files (or a whole chain) could not be detected. Configure digest signing \
                 (docs/OPERATIONS.md, \"Signed digests\")."
                    .to_owned(),
            );
        } else if !d.signatures_checked {
            notes.push(
                "Digest signatures were NOT checked: run the report with --public-key FILE to \
                 check them against your trusted keys."
                    .to_owned(),
            );
        }
        if d.chains_without_digests > 0 && d.digests > 0 {
            notes.push(format!(
                "{} chain(s) have data but no signed digest.",
                d.chains_without_digests
            ));
        }
        notes
    }

    /// The headline figures, as `(label, value)`.
    pub(crate) fn kpis(&self) -> Vec<(&'static str, String)> {
        let a = &self.agg;
        let (input, output) = a.tokens();
        let approx = |exact: bool| if exact { "" } else { "+" };
        vec![
            ("Events", fmt_int(a.events)),
            (
                "Actors",
                format!(
                    "{}{}",
                    fmt_int(a.actors.len() as u64),
                    approx(a.actors.is_exact())
                ),
            ),
            ("Model calls", fmt_int(a.model_calls())),
            ("Input tokens", svg::fmt_short(input)),
            ("Output tokens", svg::fmt_short(output)),
            (
                "Safety failures / blocks",
                format!(
                    "{} / {}",
                    fmt_int(a.safety.failed),
                    fmt_int(a.safety.blocked)
                ),
            ),
            ("Denied", fmt_int(a.outcomes[Outcome::Denied as usize])),
            ("Admin actions", fmt_int(a.admin_events())),
        ]
    }

    /// Events per tenant.
    pub(crate) fn tenant_table(&self) -> Table {
        let mut t = Table::new(
            "Events by tenant",
            &[("Tenant", false), ("Events", true), ("Share", true)],
        );
        for (tenant, n) in self.agg.tenants.top(50) {
            t.rows.push(vec![
                tenant.clone(),
                fmt_int(*n),
                share(*n, self.agg.events),
            ]);
        }
        t
    }

    /// The chart sections, in page order; `charts` false leaves the SVGs out.
    pub(crate) fn sections(&self, charts: bool) -> Vec<Section> {
        vec![
            self.activity(charts),
            self.outcomes(charts),
            self.actors(charts),
            self.models(charts),
            self.safety(charts),
            self.admin(charts),
        ]
    }

    fn activity(&self, charts: bool) -> Section {
        let a = &self.agg;
        let cats: Vec<usize> = (0..NCAT).filter(|&c| a.categories[c] > 0).collect();
        let (gran, buckets) = self.buckets();
        let series: Vec<Series> = cats
            .iter()
            .map(|&c| Series {
                name: Category::ALL[c].as_str(),
                color: CATEGORY_COLORS[c],
            })
            .collect();
        let mut headers: Vec<(&'static str, bool)> = vec![(gran.column(), false), ("Total", true)];
        headers.extend(cats.iter().map(|&c| (Category::ALL[c].as_str(), true)));
        let mut by_time = Table::new(format!("Events per {} by category", gran.noun()), &headers);
        for (start, counts) in &buckets {
            let mut row = vec![gran.long_label(*start), fmt_int(counts.iter().sum())];
            row.extend(cats.iter().map(|&c| fmt_int(counts[c])));
            by_time.rows.push(row);
        }
        let mut by_cat = Table::new(
            "Events by category",
            &[
                ("Category", false),
                ("What it records", false),
                ("Events", true),
                ("Share", true),
            ],
        );
        for &c in &cats {
            by_cat.rows.push(vec![
                Category::ALL[c].as_str().to_owned(),
                CATEGORY_MEANINGS[c].to_owned(),
                fmt_int(a.categories[c]),
                share(a.categories[c], a.events),
            ]);
        }
        let mut chart = Vec::new();
        if charts {
            let labels: Vec<String> = buckets.iter().map(|b| gran.short_label(b.0)).collect();
            let values: Vec<Vec<u64>> = buckets
                .iter()
                .map(|b| cats.iter().map(|&c| b.1[c]).collect())
                .collect();
            chart.push((
                format!("Events per {}, stacked by category", gran.noun()),
                svg::stacked_columns("Events over time by category", &labels, &values, &series),
            ));
        }
        let peak = buckets
            .iter()
            .max_by_key(|b| (b.1.iter().sum::<u64>(), std::cmp::Reverse(b.0)));
        let lead = match peak {
            Some((start, counts)) if a.events > 0 => format!(
                "{} events in {} {}s; the busiest {} was {} with {} events.",
                fmt_int(a.events),
                buckets.len(),
                gran.noun(),
                gran.noun(),
                gran.long_label(*start),
                fmt_int(counts.iter().sum())
            ),
            _ => "No events in this period.".to_owned(),
        };
        Section {
            id: "chart-activity",
            title: "Events over time",
            lead,
            charts: chart,
            tables: vec![by_cat, by_time],
        }
    }

    fn outcomes(&self, charts: bool) -> Section {
        let a = &self.agg;
        let mut t = Table::new(
            "Events by outcome",
            &[("Outcome", false), ("Events", true), ("Share", true)],
        );
        for (i, o) in Outcome::ALL.iter().enumerate() {
            t.rows.push(vec![
                o.as_str().to_owned(),
                fmt_int(a.outcomes[i]),
                share(a.outcomes[i], a.events),
            ]);
        }
        let mut headers: Vec<(&'static str, bool)> = vec![("Category", false)];
        headers.extend(Outcome::ALL.iter().map(|o| (o.as_str(), true)));
        let mut matrix = Table::new("Outcomes by category", &headers);
        for (c, cat) in Category::ALL.iter().enumerate() {
            if a.categories[c] == 0 {
                continue;
            }
            let mut row = vec![cat.as_str().to_owned()];
            row.extend(a.category_outcomes[c].iter().map(|n| fmt_int(*n)));
            matrix.rows.push(row);
        }
        let mut chart = Vec::new();
        if charts {
            let slices: Vec<(&str, u64, &str)> = Outcome::ALL
                .iter()
                .enumerate()
                .map(|(i, o)| (o.as_str(), a.outcomes[i], OUTCOME_COLORS[i]))
                .collect();
            chart.push((
                "Share of events by outcome".to_owned(),
                svg::donut("Outcomes", &slices),
            ));
            let rows: Vec<(String, Vec<u64>)> = Category::ALL
                .iter()
                .enumerate()
                .filter(|(c, _)| a.categories[*c] > 0)
                .map(|(c, cat)| (cat.as_str().to_owned(), a.category_outcomes[c].to_vec()))
                .collect();
            chart.push((
                "Outcomes by category".to_owned(),
                svg::hbars("Outcomes by category", &rows, &outcome_series()),
            ));
        }
        let not_ok = a.events - a.outcomes[Outcome::Success as usize];
        Section {
            id: "chart-outcomes",
            title: "Outcomes",
            lead: format!(
                "{} of {} events ({}) did not succeed: {} failed, {} denied, {} blocked.",
                fmt_int(not_ok),
                fmt_int(a.events),
                share(not_ok, a.events),
                fmt_int(a.outcomes[Outcome::Failure as usize]),
                fmt_int(a.outcomes[Outcome::Denied as usize]),
                fmt_int(a.outcomes[Outcome::Blocked as usize]),
            ),
            charts: chart,
            tables: vec![t, matrix],
        }
    }

    fn actors(&self, charts: bool) -> Section {
        let a = &self.agg;
        let top = a.actors.top(TOP);
        let mut headers: Vec<(&'static str, bool)> = vec![
            ("Actor", false),
            ("Type", false),
            ("Events", true),
            ("Share", true),
        ];
        headers.extend(Outcome::ALL.iter().map(|o| (o.as_str(), true)));
        let mut t = Table::new(format!("Top {} actors by events", top.len()), &headers);
        for (id, s) in &top {
            let mut row = vec![
                (*id).clone(),
                s.kind.map_or("", ActorType::as_str).to_owned(),
                fmt_int(s.events),
                share(s.events, a.events),
            ];
            row.extend(s.outcomes.iter().map(|n| fmt_int(*n)));
            t.rows.push(row);
        }
        let mut chart = Vec::new();
        if charts {
            let rows: Vec<(String, Vec<u64>)> = top
                .iter()
                .map(|(id, s)| ((*id).clone(), s.outcomes.to_vec()))
                .collect();
            chart.push((
                "Events per actor, by outcome".to_owned(),
                svg::hbars("Top actors", &rows, &outcome_series()),
            ));
        }
        let mut lead = format!(
            "{}{} distinct actors",
            fmt_int(a.actors.len() as u64),
            if a.actors.is_exact() { "" } else { "+" }
        );
        if a.anonymous > 0 {
            lead.push_str(&format!("; {} events name no actor", fmt_int(a.anonymous)));
        }
        lead.push('.');
        if !a.actors.is_exact() {
            lead.push_str(" Too many actors to count each exactly: the counts shown may be low.");
        }
        Section {
            id: "chart-actors",
            title: "Top actors",
            lead,
            charts: chart,
            tables: vec![t],
        }
    }

    fn models(&self, charts: bool) -> Section {
        let a = &self.agg;
        let top = a.models.top(TOP);
        let name = |k: &(String, String)| {
            if k.0.is_empty() {
                k.1.clone()
            } else {
                format!("{} ({})", k.1, k.0)
            }
        };
        let mut t = Table::new(
            "Model calls and tokens",
            &[
                ("Model", false),
                ("Provider", false),
                ("Calls", true),
                ("Failed", true),
                ("Blocked", true),
                ("Input tokens", true),
                ("Output tokens", true),
                ("Avg duration", true),
            ],
        );
        for (k, m) in &top {
            t.rows.push(vec![
                k.1.clone(),
                k.0.clone(),
                fmt_int(m.calls),
                fmt_int(m.failed),
                fmt_int(m.blocked),
                fmt_int(m.input_tokens),
                fmt_int(m.output_tokens),
                if m.timed > 0 {
                    format!("{:.2} s", m.duration_ns as f64 / m.timed as f64 / 1e9)
                } else {
                    String::new()
                },
            ]);
        }
        let mut chart = Vec::new();
        if charts {
            let calls: Vec<(String, Vec<u64>)> = top
                .iter()
                .map(|(k, m)| {
                    (
                        name(k),
                        vec![m.calls - m.failed - m.blocked, m.failed, m.blocked],
                    )
                })
                .collect();
            chart.push((
                "Calls per model".to_owned(),
                svg::hbars(
                    "Calls per model",
                    &calls,
                    &[
                        Series {
                            name: "success",
                            color: OUTCOME_COLORS[0],
                        },
                        Series {
                            name: "failure",
                            color: OUTCOME_COLORS[1],
                        },
                        Series {
                            name: "blocked",
                            color: OUTCOME_COLORS[3],
                        },
                    ],
                ),
            ));
            let mut by_tokens = top.clone();
            by_tokens
                .sort_by_key(|(k, m)| (std::cmp::Reverse(m.input_tokens + m.output_tokens), *k));
            let tokens: Vec<(String, Vec<u64>)> = by_tokens
                .iter()
                .map(|(k, m)| (name(k), vec![m.input_tokens, m.output_tokens]))
                .collect();
            chart.push((
                "Tokens per model".to_owned(),
                svg::hbars(
                    "Tokens per model",
                    &tokens,
                    &[
                        Series {
                            name: "input tokens",
                            color: "#4e79a7",
                        },
                        Series {
                            name: "output tokens",
                            color: "#a0cbe8",
                        },
                    ],
                ),
            ));
        }
        let (input, output) = a.tokens();
        let mut lead = format!(
            "{} model calls to {} models used {} input and {} output tokens.",
            fmt_int(a.model_calls()),
            a.models.len(),
            fmt_int(input),
            fmt_int(output)
        );
        if a.unnamed_model_calls > 0 {
            lead.push_str(&format!(
                " {} inference events name no model.",
                fmt_int(a.unnamed_model_calls)
            ));
        }
        Section {
            id: "chart-models",
            title: "Model and token usage",
            lead,
            charts: chart,
            tables: vec![t],
        }
    }

    fn safety(&self, charts: bool) -> Section {
        let s = &self.agg.safety;
        let counts = |caption: &str, what: &'static str, top: Vec<(&String, &u64)>| {
            let mut t = Table::new(caption, &[(what, false), ("Events", true)]);
            for (k, n) in top {
                t.rows.push(vec![k.clone(), fmt_int(*n)]);
            }
            t
        };
        let detectors = s.detectors.top(TOP);
        let reasons = s.reasons.top(TOP);
        let actors = s.actors.top(TOP);
        let mut chart = Vec::new();
        if charts {
            let rows = |top: &[(&String, &u64)]| -> Vec<(String, Vec<u64>)> {
                top.iter().map(|(k, n)| ((*k).clone(), vec![**n])).collect()
            };
            chart.push((
                "Failed or blocked events by detector".to_owned(),
                svg::hbars(
                    "Safety detectors",
                    &rows(&detectors),
                    &[Series {
                        name: "events",
                        color: "#e15759",
                    }],
                ),
            ));
            chart.push((
                "Failed or blocked events by actor".to_owned(),
                svg::hbars(
                    "Safety failures by actor",
                    &rows(&actors),
                    &[Series {
                        name: "events",
                        color: "#b07aa1",
                    }],
                ),
            ));
            chart.push((
                "Blocked events by reason".to_owned(),
                svg::hbars(
                    "Block reasons",
                    &rows(&reasons),
                    &[Series {
                        name: "events",
                        color: OUTCOME_COLORS[3],
                    }],
                ),
            ));
        }
        Section {
            id: "chart-safety",
            title: "Safety failures and blocks",
            lead: format!(
                "Safety checks ran on {} events: {} failed a check ({} of those checked) and {} were blocked.",
                fmt_int(s.checked),
                fmt_int(s.failed),
                share(s.failed, s.checked),
                fmt_int(s.blocked)
            ),
            charts: chart,
            tables: vec![
                counts(
                    "Failed or blocked events by detector",
                    "Detector",
                    detectors,
                ),
                counts("Failed or blocked events by actor", "Actor", actors),
                counts("Blocked events by reason", "Reason", reasons),
            ],
        }
    }

    fn admin(&self, charts: bool) -> Section {
        let a = &self.agg;
        let groups: Vec<(AdminGroup, [u64; NOUT])> =
            a.admin_groups.iter().map(|(g, n)| (*g, *n)).collect();
        let mut by_group = Table::new(
            "Administrative events by area",
            &[
                ("Area", false),
                ("Events", true),
                ("Success", true),
                ("Not successful", true),
            ],
        );
        for (g, n) in &groups {
            let total: u64 = n.iter().sum();
            by_group.rows.push(vec![
                g.label().to_owned(),
                fmt_int(total),
                fmt_int(n[0]),
                fmt_int(total - n[0]),
            ]);
        }
        let mut actions: Vec<(&String, &aggregate::ActionStats)> = a.admin_actions.top(200);
        // Grouped as the chart is, busiest first within a group.
        actions.sort_by_key(|(name, s)| {
            (
                AdminGroup::of_action(name),
                std::cmp::Reverse(s.events),
                (*name).clone(),
            )
        });
        let mut by_action = Table::new(
            "Administrative actions",
            &[
                ("Area", false),
                ("Action", false),
                ("Events", true),
                ("Not successful", true),
                ("Last (event time)", false),
            ],
        );
        for (name, s) in &actions {
            by_action.rows.push(vec![
                AdminGroup::of_action(name).label().to_owned(),
                (*name).clone(),
                fmt_int(s.events),
                fmt_int(s.events - s.outcomes[0]),
                s.last
                    .map_or(String::new(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
            ]);
        }
        let mut chart = Vec::new();
        if charts {
            let rows: Vec<(String, Vec<u64>)> = groups
                .iter()
                .map(|(g, n)| (g.label().to_owned(), n.to_vec()))
                .collect();
            chart.push((
                "Administrative events by area, by outcome".to_owned(),
                svg::hbars("Administrative actions", &rows, &outcome_series()),
            ));
        }
        let mut lead = format!(
            "{} administrative events: project lifecycle, users, configuration, import and export, model downloads, governance, backups, retention.",
            fmt_int(a.admin_events())
        );
        if !a.admin_actions.is_exact() {
            lead.push_str(
                " Too many distinct actions to list each exactly: per-action counts may be low.",
            );
        }
        Section {
            id: "chart-admin",
            title: "Administrative actions",
            lead,
            charts: chart,
            tables: vec![by_group, by_action],
        }
    }

    /// The activity buckets over the period: hours up to three days, then
    /// days, weeks, months, so a chart has tens of columns, not thousands.
    fn buckets(&self) -> (Granularity, Vec<Bucket>) {
        let Some((from, to)) = self.period() else {
            return (Granularity::Hour, Vec::new());
        };
        let span = to - from;
        let gran = if span <= Duration::hours(72) {
            Granularity::Hour
        } else if span <= Duration::days(92) {
            Granularity::Day
        } else if span <= Duration::days(731) {
            Granularity::Week
        } else {
            Granularity::Month
        };
        let mut out = Vec::new();
        let mut start = gran.floor(from);
        while start < to {
            let end = gran.next(start);
            let (h0, h1) = (
                start.timestamp().div_euclid(3600),
                end.timestamp().div_euclid(3600),
            );
            let mut counts = [0u64; NCAT];
            for (_, c) in self.agg.hours.range(h0..h1) {
                for (sum, n) in counts.iter_mut().zip(c) {
                    *sum += n;
                }
            }
            out.push((start, counts));
            start = end;
        }
        (gran, out)
    }
}

impl AdminGroup {
    /// The group of an administrative action, whatever its category said.
    fn of_action(action: &str) -> AdminGroup {
        [Category::Admin, Category::Governance, Category::System]
            .iter()
            .filter_map(|c| AdminGroup::of(*c, action))
            .find(|g| *g != AdminGroup::Other)
            .unwrap_or(AdminGroup::Other)
    }
}

/// A column of the activity chart: its start and its events per category.
type Bucket = (DateTime<Utc>, [u64; NCAT]);

/// The width of the activity chart's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granularity {
    Hour,
    Day,
    Week,
    Month,
}

impl Granularity {
    fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let day = t.date_naive();
        let midnight =
            |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight"));
        match self {
            Granularity::Hour => floor_hour(t),
            Granularity::Day => midnight(day),
            Granularity::Week => {
                midnight(day - Duration::days(i64::from(day.weekday().num_days_from_monday())))
            }
            Granularity::Month => midnight(day.with_day(1).expect("day 1")),
        }
    }

    fn next(self, t: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Granularity::Hour => t + Duration::hours(1),
            Granularity::Day => t + Duration::days(1),
            Granularity::Week => t + Duration::days(7),
            Granularity::Month => t
                .checked_add_months(Months::new(1))
                .unwrap_or(t + Duration::days(31)),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Granularity::Hour => "Hour (UTC)",
            Granularity::Day => "Day (UTC)",
            Granularity::Week => "Week of (UTC)",
            Granularity::Month => "Month",
        }
    }

    /// For tables.
    fn long_label(self, t: DateTime<Utc>) -> String {
        match self {
            Granularity::Hour => t.format("%Y-%m-%d %H:00").to_string(),
            Granularity::Day | Granularity::Week => t.format("%Y-%m-%d").to_string(),
            Granularity::Month => t.format("%Y-%m").to_string(),
        }
    }

    /// For chart axes: short, two lines at most.
    fn short_label(self, t: DateTime<Utc>) -> String {
        match self {
            Granularity::Hour => t.format("%H:00\n%d %b").to_string(),
            Granularity::Day | Granularity::Week => t.format("%d %b").to_string(),
            Granularity::Month => t.format("%b %Y").to_string(),
        }
    }
}

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    Utc.timestamp_opt(s - s.rem_euclid(3600), 0)
        .single()
        .expect("a whole hour is a valid time")
}

/// `n` as a percentage of `total`: `12.5%`.
fn share(n: u64, total: u64) -> String {
    if total == 0 {
        return "–".to_owned();
    }
    format!("{:.1}%", 100.0 * n as f64 / total as f64)
}

/// Category colours (Tableau 10), in `Category::ALL` order.
const CATEGORY_COLORS: [&str; NCAT] = [
    "#4e79a7", "#f28e2b", "#76b7b2", "#e15759", "#b07aa1", "#59a14f", "#9c755f", "#bab0ac",
];

/// What each category records, in `Category::ALL` order.
const CATEGORY_MEANINGS: [&str; NCAT] = [
    "Model calls: chat, completion, embeddings",
    "Tools run by agents and applications",
    "Reading and exporting data",
    "Authentication, authorisation, safety enforcement",
    "Model and policy approvals and assignments",
    "Users, projects, settings, licences, import and export",
    "Records about the audit trail: retention, legal holds",
    "The system's own operations: backups, start-up",
];

/// Outcome colours, in `Outcome::ALL` order: success, failure, denied, blocked.
const OUTCOME_COLORS: [&str; NOUT] = ["#59a14f", "#f28e2b", "#e15759", "#7b3294"];

fn outcome_series() -> Vec<Series<'static>> {
    Outcome::ALL
        .iter()
        .zip(OUTCOME_COLORS)
        .map(|(o, color)| Series {
            name: o.as_str(),
            color,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use otel_audit_event::{AuditEvent, Chain};
    use otel_audit_storage::{Problem, ProblemKind};

    pub(crate) fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// A report over a few events, one with a hostile actor id and model.
    pub(crate) fn sample(integrity: Integrity) -> Report {
        let mut chain = Chain::new("c1.acme", "acme").unwrap();
        let mut agg = Aggregate::default();
        let evil = r#"<script>alert("pwned")</script>|*x*"#;
        for (i, (cat, action)) in [
            (Category::Inference, "llm.chat"),
            (Category::Inference, "llm.chat"),
            (Category::Admin, "project.delete"),
            (Category::Security, "access.check"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut e = AuditEvent::new("acme", "svc", cat, action);
            e.actor.id = Some(if i == 0 {
                evil.to_owned()
            } else {
                format!("user-{i}")
            });
            if cat == Category::Inference {
                e.gen_ai.provider = Some("openai".into());
                e.gen_ai.request_model = Some(if i == 0 {
                    evil.to_owned()
                } else {
                    "gpt-4o".into()
                });
                e.gen_ai.input_tokens = Some(10);
                e.gen_ai.output_tokens = Some(5);
                e.safety.passed = Some(i != 0);
                if i == 0 {
                    e.outcome = Outcome::Blocked;
                    e.safety.detectors = vec![evil.to_owned()];
                    e.safety.block_reason = Some(evil.to_owned());
                }
            }
            let at = t("2026-01-05T10:00:00Z") + Duration::minutes(50 * i as i64);
            agg.add(chain.append(at, e).unwrap());
        }
        Report {
            title: "Q1 <review>".into(),
            store: "file:///tmp/store".into(),
            tenant: None,
            range: TimeRange {
                from: Some(t("2026-01-05T10:00:00Z")),
                to: Some(t("2026-01-05T14:00:00Z")),
            },
            generated: t("2026-02-01T09:00:00Z"),
            integrity,
            agg,
        }
    }

    pub(crate) fn verify_report(problems: Vec<Problem>) -> VerifyReport {
        VerifyReport {
            store: "file:///tmp/store".into(),
            chains: Vec::new(),
            files_verified: 3,
            events_verified: 4,
            bytes_verified: 1000,
            digests: Default::default(),
            deletions_recorded: 0,
            gaps_explained_by_deletions: 0,
            problems,
        }
    }

    pub(crate) fn problem(kind: ProblemKind, path: &str) -> Problem {
        Problem {
            kind,
            chain_id: Some("c1.acme".into()),
            path: Some(path.into()),
            row: None,
            row_end: None,
            seq: Some(5),
            seq_end: Some(9),
            digest_seqs: None,
            detail: "rows are gone".into(),
        }
    }

    #[test]
    fn hourly_buckets_cover_the_period_with_zeros() {
        let r = sample(Integrity::NoData);
        let (gran, b) = r.buckets();
        assert_eq!(gran, Granularity::Hour);
        assert_eq!(b.len(), 4);
        let totals: Vec<u64> = b.iter().map(|x| x.1.iter().sum()).collect();
        // Events at 10:00, 10:50, 11:40, 12:30.
        assert_eq!(totals, vec![2, 1, 1, 0]);
    }

    #[test]
    fn granularity_follows_the_period_length() {
        let mut r = sample(Integrity::NoData);
        r.range.to = Some(t("2026-01-20T00:00:00Z"));
        let (gran, b) = r.buckets();
        assert_eq!(gran, Granularity::Day);
        assert_eq!(b.len(), 15);
        assert_eq!(b[0].1.iter().sum::<u64>(), 4);
        r.range.to = Some(t("2026-09-01T00:00:00Z"));
        assert_eq!(r.buckets().0, Granularity::Week);
        r.range.to = Some(t("2029-01-01T00:00:00Z"));
        let (gran, b) = r.buckets();
        assert_eq!(gran, Granularity::Month);
        assert_eq!(b[0].0, t("2026-01-01T00:00:00Z"));
        assert_eq!(b.len(), 36);
    }

    #[test]
    fn open_period_is_bounded_by_the_data() {
        let mut r = sample(Integrity::NoData);
        r.range = TimeRange::all();
        assert_eq!(
            r.period(),
            Some((t("2026-01-05T10:00:00Z"), t("2026-01-05T13:00:00Z")))
        );
        r.agg = Aggregate::default();
        assert_eq!(r.period(), None);
        assert!(r.period_text().contains("no events"));
        assert!(r.sections(true).iter().all(|s| !s.tables.is_empty()));
    }
}
