//! Retention: which whole files have expired under rules by tenant and
//! category, which legal holds keep, which digests are no longer needed —
//! and the tombstone events that record each deletion in the chain, so that
//! `verify` tells an intended, recorded deletion from any other gap.
//!
//! A file expires when every row in it has: a row expires `days` after it
//! was received, `days` from the most specific rule matching its tenant and
//! category. A row no rule covers is kept for ever, and so is its file.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use object_store::ObjectStoreExt;
use otel_audit_event::{ActorType, AuditEvent, Category, Outcome, Record, Severity};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::digest::{StoredDigest, list_digests};
use crate::error::ReadError;
use crate::reader::{TimeRange, fetch, list_files, read_file_with_bytes};
use crate::store::Store;

/// The action of a tombstone event.
pub const TOMBSTONE_ACTION: &str = "retention.delete";
/// The action of the event recording deletions a legal hold blocked.
pub const HOLD_ACTION: &str = "retention.hold";
/// Tombstone attribute: the chain of the deleted file or digest.
pub const ATTR_CHAIN: &str = "retention.chain_id";
/// Tombstone attribute: first seq (file) or digest seq (digest).
pub const ATTR_FIRST: &str = "retention.first_seq";
/// Tombstone attribute: last seq (file) or digest seq (digest).
pub const ATTR_LAST: &str = "retention.last_seq";
/// Tombstone attribute: SHA-256 of the deleted object's bytes.
pub const ATTR_SHA256: &str = "retention.sha256";

/// One retention rule. The most specific rule matching a row wins: tenant
/// and category, then category, then tenant, then the rule with neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    /// Only this tenant (any when absent).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only this category (any when absent).
    #[serde(default)]
    pub category: Option<Category>,
    /// Days a row is kept after it was received.
    pub days: u32,
}

/// A legal hold: nothing it matches is deleted, whatever the rules say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    /// A name for reports.
    pub name: String,
    /// Why (a case number, a regulator's request).
    pub reason: String,
    /// Files of this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Files holding any row of this category.
    #[serde(default)]
    pub category: Option<Category>,
    /// Files whose path starts with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

impl LegalHold {
    fn matches(&self, path: &str, tenant: &str, categories: &HashSet<Category>) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.category.is_none_or(|c| categories.contains(&c))
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// Retention rules and legal holds (the collector's `retention` section, or
/// `otel-audit prune --rules FILE`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionPolicy {
    /// The rules.
    pub rules: Vec<RetentionRule>,
    /// The holds.
    pub legal_holds: Vec<LegalHold>,
}

/// A retention policy that does not make sense.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct RetentionPolicyError {
    /// The offending key (`rules[2].days`).
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl RetentionPolicy {
    /// Checks the policy; errors name the key.
    pub fn validate(&self) -> Result<(), RetentionPolicyError> {
        let mut seen = HashSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            if r.days == 0 {
                return Err(RetentionPolicyError {
                    key: format!("rules[{i}].days"),
                    reason: "must be at least 1".into(),
                });
            }
            if !seen.insert((r.tenant.clone(), r.category)) {
                return Err(RetentionPolicyError {
                    key: format!("rules[{i}]"),
                    reason: "a second rule for the same tenant and category".into(),
                });
            }
        }
        for (i, h) in self.legal_holds.iter().enumerate() {
            if h.name.trim().is_empty() || h.reason.trim().is_empty() {
                return Err(RetentionPolicyError {
                    key: format!("legal_holds[{i}]"),
                    reason: "a hold needs a name and a reason".into(),
                });
            }
        }
        Ok(())
    }

    /// Days rows of this tenant and category are kept; `None` = for ever.
    pub fn days(&self, tenant: &str, category: Category) -> Option<u32> {
        let score = |r: &RetentionRule| -> Option<u8> {
            match (&r.tenant, r.category) {
                (Some(t), _) if t != tenant => None,
                (_, Some(c)) if c != category => None,
                (Some(_), Some(_)) => Some(3),
                (None, Some(_)) => Some(2),
                (Some(_), None) => Some(1),
                (None, None) => Some(0),
            }
        };
        self.rules
            .iter()
            .filter_map(|r| score(r).map(|s| (s, r.days)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, d)| d)
    }

    /// The shortest time any row of `tenant` can be kept (to skip reading
    /// files that cannot have expired).
    fn min_days(&self, tenant: &str) -> Option<u32> {
        Category::ALL
            .iter()
            .filter_map(|c| self.days(tenant, *c))
            .min()
    }
}

/// A file (or digest) the plan deletes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deletion {
    /// Path relative to the store root.
    pub path: String,
    /// Its tenant.
    pub tenant: String,
    /// Its chain.
    pub chain_id: String,
    /// First seq (for a digest: its digest seq).
    pub first_seq: u64,
    /// Last seq (for a digest: its digest seq).
    pub last_seq: u64,
    /// SHA-256 of its bytes.
    #[serde(with = "otel_audit_event::hex32")]
    pub sha256: [u8; 32],
    /// Its size.
    pub bytes: u64,
    /// When its newest row expired (a digest: when its files did).
    pub expired_at: DateTime<Utc>,
}

/// An expired file a legal hold keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// Path relative to the store root.
    pub path: String,
    /// Its tenant.
    pub tenant: String,
    /// The hold's name.
    pub hold: String,
    /// The hold's reason.
    pub reason: String,
}

/// What a retention run would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionPlan {
    /// The moment expiry was judged against.
    pub as_of: Option<DateTime<Utc>>,
    /// Expired data files to delete.
    pub files: Vec<Deletion>,
    /// Digests no retained file needs any more.
    pub digests: Vec<Deletion>,
    /// Expired files kept by a legal hold.
    pub held: Vec<Held>,
    /// Files kept because they have not expired.
    pub files_kept: u64,
}

impl RetentionPlan {
    /// Whether the plan deletes nothing.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.digests.is_empty()
    }

    /// The tombstone events recording the deletions (category `compliance`,
    /// action [`TOMBSTONE_ACTION`], one per object, in its tenant's chain),
    /// and one [`HOLD_ACTION`] event per hold and tenant that blocked one.
    pub fn events(&self, service: &str, actor: &str) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        let mk = |tenant: &str, action: &str, outcome: Outcome| {
            let mut e = AuditEvent::new(tenant, service, Category::Compliance, action);
            e.severity = Severity::Info;
            e.outcome = outcome;
            e.actor.id = Some(actor.to_owned());
            e.actor.kind = Some(ActorType::Service);
            e
        };
        for (kind, list) in [("file", &self.files), ("digest", &self.digests)] {
            for d in list {
                let mut e = mk(&d.tenant, TOMBSTONE_ACTION, Outcome::Success);
                e.target.kind = Some(kind.into());
                e.target.id = Some(d.path.clone());
                let a = &mut e.attributes;
                a.insert(ATTR_CHAIN.into(), d.chain_id.clone());
                a.insert(ATTR_FIRST.into(), d.first_seq.to_string());
                a.insert(ATTR_LAST.into(), d.last_seq.to_string());
                a.insert(ATTR_SHA256.into(), hex::encode(d.sha256));
                a.insert("retention.expired_at".into(), d.expired_at.to_rfc3339());
                out.push(e);
            }
        }
        let mut blocked: BTreeMap<(&str, &str), (u64, &str)> = BTreeMap::new();
        for h in &self.held {
            let e = blocked
                .entry((h.tenant.as_str(), h.hold.as_str()))
                .or_insert((0, h.reason.as_str()));
            e.0 += 1;
        }
        for ((tenant, hold), (n, reason)) in blocked {
            let mut e = mk(tenant, HOLD_ACTION, Outcome::Blocked);
            e.target.kind = Some("legal_hold".into());
            e.target.id = Some(hold.to_owned());
            e.attributes
                .insert("retention.hold_reason".into(), reason.to_owned());
            e.attributes
                .insert("retention.files_held".into(), n.to_string());
            out.push(e);
        }
        out
    }
}

/// Finds what has expired as of `now`.
pub async fn plan(
    store: &Store,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<RetentionPlan, ReadError> {
    let listing = list_files(store, &TimeRange::all()).await?;
    let mut out = RetentionPlan {
        as_of: Some(now),
        ..RetentionPlan::default()
    };
    // Only files whose whole hour is older than the tenant's shortest
    // retention can have expired: the rest is kept without reading it.
    let mut candidates = Vec::new();
    for f in listing.files {
        let tenant = &f.file.partition.tenant;
        match policy.min_days(tenant) {
            Some(d) if f.file.partition.end() + Duration::days(i64::from(d)) <= now => {
                candidates.push(f)
            }
            _ => out.files_kept += 1,
        }
    }
    let judged: Vec<_> = stream::iter(candidates)
        .map(|f| async move {
            let (bytes, records) = read_file_with_bytes(store, &f.path).await?;
            let sha256: [u8; 32] = Sha256::digest(&bytes).into();
            Ok::<_, ReadError>((f, sha256, bytes.len() as u64, records))
        })
        .buffered(4)
        .try_collect()
        .await?;
    for (f, sha256, size, records) in judged {
        let tenant = f.file.partition.tenant.clone();
        let mut expired_at = Some(DateTime::<Utc>::MIN_UTC);
        let mut categories = HashSet::new();
        for r in &records {
            categories.insert(r.event.category);
            expired_at = match (expired_at, policy.days(&tenant, r.event.category)) {
                (Some(e), Some(d)) => Some(e.max(r.received_at + Duration::days(i64::from(d)))),
                _ => None,
            };
        }
        let (Some(expired_at), Some(first), Some(last)) =
            (expired_at, records.first(), records.last())
        else {
            out.files_kept += 1;
            continue;
        };
        if expired_at > now {
            out.files_kept += 1;
            continue;
        }
        if let Some(h) = policy
            .legal_holds
            .iter()
            .find(|h| h.matches(&f.path, &tenant, &categories))
        {
            out.held.push(Held {
                path: f.path.clone(),
                tenant,
                hold: h.name.clone(),
                reason: h.reason.clone(),
            });
            continue;
        }
        out.files.push(Deletion {
            path: f.path.clone(),
            tenant,
            chain_id: f.file.chain_id.clone(),
            first_seq: first.seq,
            last_seq: last.seq,
            sha256,
            bytes: size,
            expired_at,
        });
    }
    out.digests = expired_digests(store, &out.files).await?;
    Ok(out)
}

/// Digests all of whose files are gone (deleted by this plan or before),
/// oldest first and never a chain's newest: the digest chain is cut only at
/// its start, so what stays verifies from there on.
async fn expired_digests(store: &Store, deleting: &[Deletion]) -> Result<Vec<Deletion>, ReadError> {
    let going: HashMap<&str, &Deletion> = deleting.iter().map(|d| (d.path.as_str(), d)).collect();
    let present: HashSet<String> = list_files(store, &TimeRange::all())
        .await?
        .files
        .into_iter()
        .map(|f| f.path)
        .collect();
    let listing = list_digests(store).await?;
    let mut out = Vec::new();
    for digests in listing.chains.values() {
        let Some((_, older)) = digests.split_last() else {
            continue;
        };
        for d in older {
            let bytes = fetch(store, &d.path).await?;
            let Ok(stored) = StoredDigest::parse(&d.path, &bytes) else {
                break;
            };
            let mut expired_at = DateTime::<Utc>::MIN_UTC;
            let all_gone = stored
                .digest
                .files
                .iter()
                .all(|f| match going.get(f.path.as_str()) {
                    Some(del) => {
                        expired_at = expired_at.max(del.expired_at);
                        true
                    }
                    None => !present.contains(&f.path),
                });
            if !all_gone {
                break;
            }
            out.push(Deletion {
                path: d.path.clone(),
                tenant: d.tenant.clone(),
                chain_id: d.chain_id.clone(),
                first_seq: d.digest_seq,
                last_seq: d.digest_seq,
                sha256: stored.sha256,
                bytes: bytes.len() as u64,
                expired_at: if stored.digest.files.is_empty() {
                    stored.digest.period_end
                } else {
                    expired_at
                },
            });
        }
    }
    Ok(out)
}

/// Deletes what the plan lists: files first, then digests. Record the
/// plan's [`RetentionPlan::events`] durably before calling this, so that no
/// deletion is ever unrecorded. A file that is already gone counts as
/// deleted. Returns the number of objects deleted.
pub async fn execute(store: &Store, plan: &RetentionPlan) -> Result<u64, ReadError> {
    let mut n = 0;
    for d in plan.files.iter().chain(&plan.digests) {
        let loc = store.location(&d.path);
        match store.object_store().delete(&loc).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => n += 1,
            Err(source) => {
                return Err(ReadError::Store {
                    url: store.url().to_owned(),
                    path: d.path.clone(),
                    source,
                });
            }
        }
    }
    Ok(n)
}

/// A deletion a tombstone recorded, as verify reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub(crate) kind: String,
    pub(crate) path: String,
    pub(crate) chain_id: String,
    pub(crate) first: u64,
    pub(crate) last: u64,
}

impl Tombstone {
    /// The tombstone a stored row is, if it is one.
    pub(crate) fn of(r: &Record) -> Option<Tombstone> {
        let e = &r.event;
        if e.action != TOMBSTONE_ACTION || e.category != Category::Compliance {
            return None;
        }
        Some(Tombstone {
            kind: e.target.kind.clone()?,
            path: e.target.id.clone()?,
            chain_id: e.attributes.get(ATTR_CHAIN)?.clone(),
            first: e.attributes.get(ATTR_FIRST)?.parse().ok()?,
            last: e.attributes.get(ATTR_LAST)?.parse().ok()?,
        })
    }
}
