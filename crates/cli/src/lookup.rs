//! `otel-audit show` and `otel-audit list`: one event by id, or the events
//! matching filters, read straight from the store.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use futures::{StreamExt, TryStreamExt, stream};
use otel_audit_event::{Category, Outcome, Record};
use otel_audit_storage::{ListedFile, Store, TimeRange, find_event, list_files, read_file};

use crate::{EXIT_OK, Period, S3Flags, check_tenant};

/// One event of a store, as `show`, `decrypt` and `prove` name it.
#[derive(Args)]
pub(crate) struct EventAt {
    /// The event id (a UUID).
    #[arg(value_name = "EVENT_ID")]
    event_id: String,
    /// The store: a path, file:///abs/path, s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    store: String,
    #[command(flatten)]
    period: Period,
}

impl EventAt {
    /// The id, the opened store and the range to search, or which argument
    /// is wrong.
    pub(crate) fn open(&self, s3: &S3Flags) -> anyhow::Result<(uuid::Uuid, Store, TimeRange)> {
        let id = self
            .event_id
            .parse()
            .with_context(|| format!("EVENT_ID {:?} is not a UUID", self.event_id))?;
        let range = self.period.range()?;
        let store = Store::open(&self.store, &s3.options())?;
        Ok((id, store, range))
    }
}

#[derive(Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    event: EventAt,
    /// Print the stored row as JSON, with its file and row index.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Flags,
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// The store: a path, file:///abs/path, s3://bucket/prefix.
    #[arg(long, value_name = "URL")]
    store: String,
    #[command(flatten)]
    period: Period,
    /// Only this tenant (prunes the listing to its partitions).
    #[arg(long, value_name = "TENANT")]
    tenant: Option<String>,
    /// Only events of this actor id.
    #[arg(long, value_name = "ACTOR_ID")]
    actor: Option<String>,
    /// Only this action; `*` matches any text (`project.*`).
    #[arg(long, value_name = "ACTION")]
    action: Option<String>,
    /// Only this category.
    #[arg(long, value_name = "CATEGORY", value_parser = parse_category)]
    category: Option<Category>,
    /// Only this outcome.
    #[arg(long, value_name = "OUTCOME", value_parser = parse_outcome)]
    outcome: Option<Outcome>,
    /// Only events whose target id is this.
    #[arg(long, value_name = "TARGET_ID")]
    target: Option<String>,
    /// Only events whose actor id or target id is this (a data-subject
    /// access request).
    #[arg(long, value_name = "ID")]
    subject: Option<String>,
    /// Only calls to this model (request model).
    #[arg(long, value_name = "MODEL")]
    model: Option<String>,
    /// At most this many events (0: no limit).
    #[arg(long, default_value_t = 100, value_name = "N")]
    limit: usize,
    /// One JSON object per line (the stored row) instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    s3: S3Flags,
}

fn parse_category(s: &str) -> Result<Category, String> {
    s.parse()
        .map_err(|e: otel_audit_event::ParseEnumError| e.to_string())
}

fn parse_outcome(s: &str) -> Result<Outcome, String> {
    s.parse()
        .map_err(|e: otel_audit_event::ParseEnumError| e.to_string())
}

/// Finds one event or fails with a message naming the store and range.
pub(crate) async fn find(
    store: &Store,
    event_id: uuid::Uuid,
    range: &TimeRange,
) -> anyhow::Result<otel_audit_storage::FoundEvent> {
    match find_event(store, event_id, range).await? {
        Some(found) => Ok(found),
        None => bail!("no event {event_id} in {}{}", store.url(), range.describe()),
    }
}

pub(crate) async fn cmd_show(a: ShowArgs) -> anyhow::Result<u8> {
    let (event_id, store, range) = a.event.open(&a.s3)?;
    let found = find(&store, event_id, &range).await?;
    let out = if a.json {
        let v = serde_json::json!({
            "path": found.file.path,
            "row_index": found.index,
            "record": found.record(),
        });
        serde_json::to_string_pretty(&v)? + "\n"
    } else {
        render_event(found.record(), &found.file.path, found.index)
    };
    print_out(&out)?;
    Ok(EXIT_OK)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print_out(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// Stored texts come from applications and SDKs: control characters are
/// shown escaped so a crafted value cannot drive the analyst's terminal.
pub(crate) fn clean(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Joins the present parts with `sep`.
fn join(parts: &[Option<String>], sep: &str) -> Option<String> {
    let v: Vec<&str> = parts.iter().flatten().map(String::as_str).collect();
    (!v.is_empty()).then(|| v.join(sep))
}

fn labeled(label: &str, v: Option<&String>) -> Option<String> {
    v.map(|v| format!("{label} {}", clean(v)))
}

/// ` <label> <value>` when there is a value.
fn suffix(label: &str, v: Option<&String>) -> String {
    labeled(label, v)
        .map(|s| format!(" {s}"))
        .unwrap_or_default()
}

/// The human view of one stored event: every field that has a value.
pub(crate) fn render_event(r: &Record, path: &str, row: usize) -> String {
    let e = &r.event;
    let mut out = String::new();
    let mut line = |label: &str, value: Option<String>| {
        if let Some(v) = value {
            let _ = writeln!(out, "  {label:<13}{v}");
        }
    };
    let mut head = format!("event {}", e.event_id);
    let _ = write!(head, "  (chain {} seq {})", clean(&r.chain_id), r.seq);
    let when = format!(
        "{}  (received {}{})",
        ts(e.time),
        ts(r.received_at),
        e.duration_ns
            .map(|d| format!(", duration {}", human_duration(d)))
            .unwrap_or_default()
    );
    line("time", Some(when));
    line("severity", Some(e.severity.as_str().to_owned()));
    line("tenant", Some(clean(&e.tenant)));
    let s = &e.service;
    let extra = join(
        &[
            s.environment.as_deref().map(clean),
            s.host.as_deref().map(clean),
        ],
        ", ",
    );
    line(
        "service",
        Some(format!(
            "{}{}{}",
            clean(&s.name),
            s.version
                .as_deref()
                .map(|v| format!(" {}", clean(v)))
                .unwrap_or_default(),
            extra.map(|x| format!(" ({x})")).unwrap_or_default()
        )),
    );
    let a = &e.actor;
    let actor_extra = join(
        &[
            a.kind.map(|k| k.as_str().to_owned()),
            labeled("role", a.role.as_ref()),
            labeled("ip", a.ip.as_ref()),
            labeled("session", a.session.as_ref()),
        ],
        ", ",
    );
    if a.id.is_some() || actor_extra.is_some() {
        line(
            "actor",
            Some(format!(
                "{}{}",
                a.id.as_deref().map_or_else(|| "(no id)".to_owned(), clean),
                actor_extra.map(|x| format!(" ({x})")).unwrap_or_default()
            )),
        );
    }
    line("category", Some(e.category.as_str().to_owned()));
    line("action", Some(clean(&e.action)));
    line("outcome", Some(e.outcome.as_str().to_owned()));
    line(
        "target",
        join(
            &[
                e.target.kind.as_deref().map(clean),
                e.target.id.as_deref().map(clean),
            ],
            " ",
        ),
    );
    line(
        "error",
        join(
            &[
                e.error.kind.as_deref().map(clean),
                e.error.message.as_deref().map(clean),
            ],
            ": ",
        ),
    );
    let g = &e.gen_ai;
    let models = match (&g.request_model, &g.response_model) {
        (Some(a), Some(b)) if a != b => Some(format!("{} -> {}", clean(a), clean(b))),
        (Some(m), _) | (None, Some(m)) => Some(clean(m)),
        (None, None) => None,
    };
    let tokens = match (g.input_tokens, g.output_tokens) {
        (None, None) => None,
        (i, o) => Some(format!(
            "tokens {} in / {} out",
            i.map_or("-".into(), |v| v.to_string()),
            o.map_or("-".into(), |v| v.to_string())
        )),
    };
    line(
        "gen_ai",
        join(
            &[
                join(
                    &[
                        g.provider.as_deref().map(clean),
                        g.operation.as_deref().map(clean),
                        models,
                    ],
                    " ",
                ),
                tokens,
                g.temperature.map(|t| format!("temperature {t}")),
                labeled("conversation", g.conversation_id.as_ref()),
                labeled("agent", g.agent_name.as_ref()),
                labeled("tool", g.tool_name.as_ref()),
            ],
            ", ",
        ),
    );
    let sf = &e.safety;
    if sf.passed.is_some() || !sf.detectors.is_empty() || sf.block_reason.is_some() {
        let verdict = match sf.passed {
            Some(true) => "passed",
            Some(false) => "FAILED",
            None => "not checked",
        };
        line(
            "safety",
            join(
                &[
                    Some(verdict.to_owned()),
                    (!sf.detectors.is_empty()).then(|| {
                        format!(
                            "detectors {}",
                            sf.detectors
                                .iter()
                                .map(|d| clean(d))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }),
                    labeled("blocked:", sf.block_reason.as_ref()),
                ],
                "; ",
            ),
        );
    }
    let t = &e.trace;
    line(
        "trace",
        join(
            &[
                labeled("trace", t.trace_id.as_ref()),
                labeled("span", t.span_id.as_ref()),
                labeled("parent", t.parent_span_id.as_ref()),
            ],
            ", ",
        ),
    );
    if !e.content_digests.is_empty() {
        let _ = writeln!(out, "  content digests (the content itself is not stored)");
        for d in &e.content_digests {
            let _ = writeln!(
                out,
                "    {}  {}{}  {}",
                clean(&d.field),
                d.algorithm.as_str(),
                suffix("key", d.key_id.as_ref()),
                hex::encode(d.digest)
            );
        }
    }
    if !e.sealed_content.is_empty() {
        let _ = writeln!(
            out,
            "  sealed content (encrypted; `otel-audit decrypt {}` with the key opens it)",
            e.event_id
        );
        for s in &e.sealed_content {
            let _ = writeln!(
                out,
                "    {}  {} key {}  {} bytes",
                clean(&s.field),
                clean(&s.algorithm),
                clean(&s.key_id),
                s.ciphertext.len()
            );
        }
    }
    if !e.attributes.is_empty() {
        let _ = writeln!(out, "  attributes");
        for (k, v) in &e.attributes {
            let _ = writeln!(out, "    {} = {}", clean(k), clean(v));
        }
    }
    if !e.redactions.is_empty() {
        let _ = writeln!(
            out,
            "  redactions (what was removed before storage, never the value)"
        );
        for r in &e.redactions {
            let _ = writeln!(
                out,
                "    {}  {}{}{}",
                clean(&r.field),
                r.method.as_str(),
                suffix("detector", r.detector.as_ref()),
                suffix("key", r.key_id.as_ref())
            );
        }
    }
    let _ = writeln!(out, "  stored in    {} row {row}", clean(path));
    let _ = writeln!(out, "  prev hash    {}", hex::encode(r.prev_hash));
    let _ = writeln!(out, "  hash         {}", hex::encode(r.hash));
    format!("{head}\n{out}")
}

fn human_duration(ns: i64) -> String {
    if ns.abs() >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else if ns.abs() >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} µs", ns as f64 / 1e3)
    }
}

/// The `list` filters, applied to each stored row.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub category: Option<Category>,
    pub outcome: Option<Outcome>,
    pub target: Option<String>,
    pub subject: Option<String>,
    pub model: Option<String>,
}

impl Filter {
    pub(crate) fn matches(&self, r: &Record) -> bool {
        let e = &r.event;
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_ref() == Some(w))
        };
        eq(&self.actor, &e.actor.id)
            && eq(&self.target, &e.target.id)
            && eq(&self.model, &e.gen_ai.request_model)
            && self.category.is_none_or(|c| c == e.category)
            && self.outcome.is_none_or(|o| o == e.outcome)
            && self
                .action
                .as_deref()
                .is_none_or(|p| glob_match(p, &e.action))
            && self
                .subject
                .as_ref()
                .is_none_or(|s| e.actor.id.as_ref() == Some(s) || e.target.id.as_ref() == Some(s))
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Data files grouped by hour partition, in time order: every tenant's and
/// chain's files of one hour together, so events can be listed in time order
/// while only one hour's rows are in memory.
pub(crate) fn group_by_hour(files: Vec<ListedFile>) -> Vec<Vec<ListedFile>> {
    let mut by_hour: BTreeMap<DateTime<Utc>, Vec<ListedFile>> = BTreeMap::new();
    for f in files {
        by_hour.entry(f.file.partition.start()).or_default().push(f);
    }
    by_hour.into_values().collect()
}

const TABLE_HEADER: [&str; 8] = [
    "TIME", "TENANT", "ACTOR", "CATEGORY", "ACTION", "OUTCOME", "TARGET", "EVENT_ID",
];
const TABLE_WIDTHS: [usize; 8] = [24, 12, 18, 11, 30, 8, 26, 36];

fn cell(s: &str, width: usize) -> String {
    let s = clean(s);
    if s.chars().count() <= width {
        format!("{s:<width$}")
    } else {
        let cut: String = s.chars().take(width - 1).collect();
        format!("{cut}…")
    }
}

fn table_row(cells: [&str; 8]) -> String {
    let mut line = String::new();
    for (i, (c, w)) in cells.iter().zip(TABLE_WIDTHS).enumerate() {
        if i + 1 == cells.len() {
            line.push_str(&clean(c));
        } else {
            line.push_str(&cell(c, w));
            line.push_str("  ");
        }
    }
    line.push('\n');
    line
}

fn list_row(r: &Record) -> String {
    let e = &r.event;
    let target = match (&e.target.kind, &e.target.id) {
        (Some(k), Some(i)) => format!("{k}:{i}"),
        (Some(x), None) | (None, Some(x)) => x.clone(),
        (None, None) => String::new(),
    };
    table_row([
        &ts(e.time),
        &e.tenant,
        e.actor.id.as_deref().unwrap_or("-"),
        e.category.as_str(),
        &e.action,
        e.outcome.as_str(),
        &target,
        &e.event_id.to_string(),
    ])
}

pub(crate) async fn cmd_list(a: ListArgs) -> anyhow::Result<u8> {
    let range = a.period.range()?;
    check_tenant(a.tenant.as_deref())?;
    let store = Store::open(&a.store, &a.s3.options())?;
    let filter = Filter {
        actor: a.actor,
        action: a.action,
        category: a.category,
        outcome: a.outcome,
        target: a.target,
        subject: a.subject,
        model: a.model,
    };
    let files: Vec<ListedFile> = list_files(&store, &range)
        .await?
        .files
        .into_iter()
        .filter(|f| {
            a.tenant
                .as_ref()
                .is_none_or(|t| &f.file.partition.tenant == t)
        })
        .collect();
    let limit = if a.limit == 0 { usize::MAX } else { a.limit };
    let mut shown = 0usize;
    let mut more = false;
    if !a.json {
        print_out(&table_row(TABLE_HEADER))?;
    }
    for hour in group_by_hour(files) {
        let store = &store;
        let filter = &filter;
        let mut rows: Vec<Record> = stream::iter(hour)
            .map(|f| async move {
                let records = read_file(store, &f.path).await?;
                Ok::<_, otel_audit_storage::ReadError>(
                    records
                        .into_iter()
                        .filter(|r| range.contains(r.received_at) && filter.matches(r))
                        .collect::<Vec<_>>(),
                )
            })
            .buffered(4)
            .try_concat()
            .await?;
        rows.sort_by(|x, y| {
            (x.event.time, &x.chain_id, x.seq).cmp(&(y.event.time, &y.chain_id, y.seq))
        });
        let mut out = String::new();
        for r in &rows {
            if shown == limit {
                more = true;
                break;
            }
            if a.json {
                out.push_str(&serde_json::to_string(r)?);
                out.push('\n');
            } else {
                out.push_str(&list_row(r));
            }
            shown += 1;
        }
        print_out(&out)?;
        if more {
            break;
        }
    }
    if more {
        eprintln!(
            "showed the first {shown} matching events; more match (raise --limit, or 0 for all)"
        );
    } else if !a.json {
        eprintln!("{shown} events");
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob() {
        assert!(glob_match("project.*", "project.create"));
        assert!(glob_match("project.*", "project."));
        assert!(!glob_match("project.*", "projects.create"));
        assert!(glob_match("*.export", "task.export"));
        assert!(glob_match("config.*.teams", "config.change.teams"));
        assert!(!glob_match("config.*.teams", "config.change.labels"));
        assert!(glob_match("llm.chat", "llm.chat"));
        assert!(!glob_match("llm.chat", "llm.chat2"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*a", "aa"));
        assert!(!glob_match("a*a", "a"));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(clean("plain"), "plain");
        assert_eq!(clean("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(clean("two\nlines"), "two\\nlines");
    }

    #[test]
    fn long_cells_are_cut() {
        assert_eq!(cell("abc", 5), "abc  ");
        assert_eq!(cell("abcdefgh", 5), "abcd…");
    }
}
