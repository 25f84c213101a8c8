//! One pass over a period's records into the counts a report shows, in
//! memory bounded by the number of hours and the top-N capacities, never by
//! the number of events.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use chrono::{DateTime, Utc};
use otel_audit_event::{ActorType, Category, Outcome, Record};

/// Number of categories (`Category::ALL`); arrays of counts are indexed by `Category as usize`.
pub(crate) const NCAT: usize = Category::ALL.len();
/// Number of outcomes (`Outcome::ALL`); arrays of counts are indexed by `Outcome as usize`.
pub(crate) const NOUT: usize = Outcome::ALL.len();

/// Distinct keys a [`TopN`] keeps for actors: far more than a report shows,
/// so its counts stay exact for any realistic period.
const ACTOR_CAP: usize = 10_000;
/// Distinct keys kept for small vocabularies (models, detectors, actions).
const SMALL_CAP: usize = 1_000;

/// What a [`TopN`] ranks its entries by.
pub(crate) trait Weight {
    /// The entry's count.
    fn weight(&self) -> u64;
}

impl Weight for u64 {
    fn weight(&self) -> u64 {
        *self
    }
}

/// Per-key statistics that keep memory bounded: when more than twice `cap`
/// distinct keys have been seen, only the `cap` heaviest are kept. Counts are
/// exact while no key was ever dropped ([`TopN::is_exact`]); after that, a
/// key seen again starts from zero, so counts may be low, never high.
#[derive(Debug, Clone)]
pub(crate) struct TopN<K, V> {
    cap: usize,
    map: HashMap<K, V>,
    dropped: bool,
}

impl<K: Hash + Eq + Ord + Clone, V: Default + Weight> TopN<K, V> {
    /// An empty counter keeping at least `cap` keys.
    pub(crate) fn new(cap: usize) -> Self {
        TopN {
            cap: cap.max(1),
            map: HashMap::new(),
            dropped: false,
        }
    }

    /// The statistics of `key`, created empty when new.
    pub(crate) fn entry(&mut self, key: K) -> &mut V {
        if !self.map.contains_key(&key) && self.map.len() >= 2 * self.cap {
            self.prune();
        }
        self.map.entry(key).or_default()
    }

    /// Drops all but the `cap` heaviest keys: amortised over the `cap` inserts
    /// since the last prune, this costs O(log cap) per insert.
    fn prune(&mut self) {
        let mut entries: Vec<(K, V)> = self.map.drain().collect();
        entries.sort_by(|a, b| b.1.weight().cmp(&a.1.weight()).then_with(|| a.0.cmp(&b.0)));
        entries.truncate(self.cap);
        self.map = entries.into_iter().collect();
        self.dropped = true;
    }

    /// The `n` heaviest entries, heaviest first (ties by key, for stable output).
    pub(crate) fn top(&self, n: usize) -> Vec<(&K, &V)> {
        let mut v: Vec<(&K, &V)> = self.map.iter().collect();
        v.sort_by(|a, b| b.1.weight().cmp(&a.1.weight()).then_with(|| a.0.cmp(b.0)));
        v.truncate(n);
        v
    }

    /// Distinct keys held (all keys seen, when [`TopN::is_exact`]).
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key was ever dropped, so every count is exact.
    pub(crate) fn is_exact(&self) -> bool {
        !self.dropped
    }
}

/// What one actor did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ActorStats {
    /// Events.
    pub events: u64,
    /// Events by outcome.
    pub outcomes: [u64; NOUT],
    /// Person, service or agent, as the actor's first event said.
    pub kind: Option<ActorType>,
}

impl Weight for ActorStats {
    fn weight(&self) -> u64 {
        self.events
    }
}

/// Use of one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ModelStats {
    /// Inference events naming the model.
    pub calls: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Calls stopped by a safety control.
    pub blocked: u64,
    /// Sum of `gen_ai.usage.input_tokens`.
    pub input_tokens: u64,
    /// Sum of `gen_ai.usage.output_tokens`.
    pub output_tokens: u64,
    /// Sum of `duration_ns` over the calls that have one.
    pub duration_ns: u128,
    /// Calls with a duration.
    pub timed: u64,
}

impl Weight for ModelStats {
    fn weight(&self) -> u64 {
        self.calls
    }
}

/// One administrative action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ActionStats {
    /// Events.
    pub events: u64,
    /// Events by outcome.
    pub outcomes: [u64; NOUT],
    /// The latest event time.
    pub last: Option<DateTime<Utc>>,
}

impl Weight for ActionStats {
    fn weight(&self) -> u64 {
        self.events
    }
}

/// The areas administrative actions are shown in; declaration order is display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum AdminGroup {
    /// `project.*`.
    Projects,
    /// `user.*`.
    Users,
    /// `config.*`, `settings.*`, `policy.*`.
    Configuration,
    /// `*.import`, `*.export`.
    ImportExport,
    /// `model.download`.
    ModelDownloads,
    /// `license.*`.
    Licences,
    /// Other governance decisions (approvals, assignments).
    Governance,
    /// `backup.*`.
    Backups,
    /// `retention.*`, `legal_hold.*`.
    Retention,
    /// Everything else: collector start and stop, unknown admin actions.
    Other,
}

impl AdminGroup {
    /// A heading for the group.
    pub(crate) fn label(self) -> &'static str {
        match self {
            AdminGroup::Projects => "Project lifecycle",
            AdminGroup::Users => "User management",
            AdminGroup::Configuration => "Configuration changes",
            AdminGroup::ImportExport => "Import / export",
            AdminGroup::ModelDownloads => "Model downloads",
            AdminGroup::Licences => "Licences",
            AdminGroup::Governance => "Governance approvals",
            AdminGroup::Backups => "Backups",
            AdminGroup::Retention => "Retention and legal holds",
            AdminGroup::Other => "Other admin and system events",
        }
    }

    /// The group of an administrative event's action; `None` for events that
    /// are not administrative (model calls, tools, data access, security).
    pub(crate) fn of(category: Category, action: &str) -> Option<AdminGroup> {
        if !matches!(
            category,
            Category::Admin | Category::Governance | Category::Compliance | Category::System
        ) {
            return None;
        }
        let prefix = action.split('.').next().unwrap_or_default();
        let last = action.rsplit('.').next().unwrap_or_default();
        Some(match prefix {
            "project" | "projects" => AdminGroup::Projects,
            "user" | "users" | "role" | "group" => AdminGroup::Users,
            "config" | "settings" | "setting" | "policy" => AdminGroup::Configuration,
            _ if last == "import" || last == "export" => AdminGroup::ImportExport,
            _ if action == "model.download" => AdminGroup::ModelDownloads,
            "license" | "licence" => AdminGroup::Licences,
            "backup" => AdminGroup::Backups,
            "retention" | "legal_hold" => AdminGroup::Retention,
            _ if category == Category::Governance => AdminGroup::Governance,
            _ => AdminGroup::Other,
        })
    }
}

/// Safety verdicts: checks run, failed, blocked, and by what.
#[derive(Debug, Clone)]
pub(crate) struct SafetyStats {
    /// Events on which safety checks ran.
    pub checked: u64,
    /// Events on which a check failed.
    pub failed: u64,
    /// Events stopped by a safety or policy control (outcome `blocked`).
    pub blocked: u64,
    /// Failed or blocked events per detector that triggered.
    pub detectors: TopN<String, u64>,
    /// Blocked events per reason.
    pub reasons: TopN<String, u64>,
    /// Failed or blocked events per actor.
    pub actors: TopN<String, u64>,
}

/// Everything a report counts.
#[derive(Debug, Clone)]
pub(crate) struct Aggregate {
    /// Events.
    pub events: u64,
    /// The earliest receive time.
    pub first: Option<DateTime<Utc>>,
    /// The latest receive time.
    pub last: Option<DateTime<Utc>>,
    /// Events per receive hour (hours since the epoch) and category.
    pub hours: BTreeMap<i64, [u64; NCAT]>,
    /// Events per category.
    pub categories: [u64; NCAT],
    /// Events per outcome.
    pub outcomes: [u64; NOUT],
    /// Events per category and outcome.
    pub category_outcomes: [[u64; NOUT]; NCAT],
    /// Events per tenant.
    pub tenants: TopN<String, u64>,
    /// Events per actor id.
    pub actors: TopN<String, ActorStats>,
    /// Events with no actor id.
    pub anonymous: u64,
    /// Inference events per (provider, model).
    pub models: TopN<(String, String), ModelStats>,
    /// Inference events naming no model.
    pub unnamed_model_calls: u64,
    /// Safety verdicts.
    pub safety: SafetyStats,
    /// Administrative events per group and outcome.
    pub admin_groups: BTreeMap<AdminGroup, [u64; NOUT]>,
    /// Administrative events per action.
    pub admin_actions: TopN<String, ActionStats>,
    /// Data files that could not be decoded, so none of their events is counted.
    pub unreadable_files: u64,
}

impl Default for Aggregate {
    fn default() -> Self {
        Aggregate {
            events: 0,
            first: None,
            last: None,
            hours: BTreeMap::new(),
            categories: [0; NCAT],
            outcomes: [0; NOUT],
            category_outcomes: [[0; NOUT]; NCAT],
            tenants: TopN::new(SMALL_CAP),
            actors: TopN::new(ACTOR_CAP),
            anonymous: 0,
            models: TopN::new(SMALL_CAP),
            unnamed_model_calls: 0,
            safety: SafetyStats {
                checked: 0,
                failed: 0,
                blocked: 0,
                detectors: TopN::new(SMALL_CAP),
                reasons: TopN::new(SMALL_CAP),
                actors: TopN::new(ACTOR_CAP),
            },
            admin_groups: BTreeMap::new(),
            admin_actions: TopN::new(SMALL_CAP),
            unreadable_files: 0,
        }
    }
}

impl Aggregate {
    /// Counts one record. Takes it by value to move its strings into the
    /// counters instead of copying them.
    pub(crate) fn add(&mut self, r: Record) {
        let e = r.event;
        let cat = e.category as usize;
        let out = e.outcome as usize;
        self.events += 1;
        self.first = Some(self.first.map_or(r.received_at, |f| f.min(r.received_at)));
        self.last = Some(self.last.map_or(r.received_at, |l| l.max(r.received_at)));
        let hour = r.received_at.timestamp().div_euclid(3600);
        self.hours.entry(hour).or_insert([0; NCAT])[cat] += 1;
        self.categories[cat] += 1;
        self.outcomes[out] += 1;
        self.category_outcomes[cat][out] += 1;
        *self.tenants.entry(e.tenant) += 1;

        let failed_check = e.safety.passed == Some(false);
        let blocked = e.outcome == Outcome::Blocked;
        if e.safety.passed.is_some() {
            self.safety.checked += 1;
        }
        if failed_check {
            self.safety.failed += 1;
        }
        if blocked {
            self.safety.blocked += 1;
            let reason = e
                .safety
                .block_reason
                .clone()
                .unwrap_or_else(|| "(no reason recorded)".to_owned());
            *self.safety.reasons.entry(reason) += 1;
        }
        if failed_check || blocked {
            for d in e.safety.detectors {
                *self.safety.detectors.entry(d) += 1;
            }
            if let Some(id) = &e.actor.id {
                *self.safety.actors.entry(id.clone()) += 1;
            }
        }

        if e.category == Category::Inference {
            match e.gen_ai.request_model {
                Some(model) => {
                    let provider = e.gen_ai.provider.unwrap_or_default();
                    let m = self.models.entry((provider, model));
                    m.calls += 1;
                    m.failed += u64::from(e.outcome == Outcome::Failure);
                    m.blocked += u64::from(blocked);
                    m.input_tokens += e.gen_ai.input_tokens.map_or(0, |t| t.max(0) as u64);
                    m.output_tokens += e.gen_ai.output_tokens.map_or(0, |t| t.max(0) as u64);
                    if let Some(d) = e.duration_ns.filter(|d| *d >= 0) {
                        m.duration_ns += d as u128;
                        m.timed += 1;
                    }
                }
                None => self.unnamed_model_calls += 1,
            }
        }

        if let Some(group) = AdminGroup::of(e.category, &e.action) {
            self.admin_groups.entry(group).or_insert([0; NOUT])[out] += 1;
            let a = self.admin_actions.entry(e.action);
            a.events += 1;
            a.outcomes[out] += 1;
            a.last = Some(a.last.map_or(e.time, |l| l.max(e.time)));
        }

        match e.actor.id {
            Some(id) => {
                let a = self.actors.entry(id);
                a.events += 1;
                a.outcomes[out] += 1;
                if a.kind.is_none() {
                    a.kind = e.actor.kind;
                }
            }
            None => self.anonymous += 1,
        }
    }

    /// Events of administrative groups.
    pub(crate) fn admin_events(&self) -> u64 {
        self.admin_groups.values().flatten().sum()
    }

    /// Inference calls that name a model.
    pub(crate) fn model_calls(&self) -> u64 {
        self.models.map.values().map(|m| m.calls).sum()
    }

    /// Input and output tokens over all models.
    pub(crate) fn tokens(&self) -> (u64, u64) {
        self.models.map.values().fold((0, 0), |(i, o), m| {
            (i + m.input_tokens, o + m.output_tokens)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_audit_event::{AuditEvent, Chain};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn records(events: Vec<(&str, AuditEvent)>) -> Vec<Record> {
        let mut chain = Chain::new("c1.acme", "acme").unwrap();
        events
            .into_iter()
            .map(|(at, e)| chain.append(t(at), e).unwrap())
            .collect()
    }

    fn ev(category: Category, action: &str, actor: &str) -> AuditEvent {
        let mut e = AuditEvent::new("acme", "svc", category, action);
        e.actor.id = Some(actor.to_owned());
        e.actor.kind = Some(ActorType::User);
        e
    }

    #[test]
    fn counts_categories_outcomes_hours_and_actors() {
        let mut denied = ev(Category::Security, "access.check", "bob");
        denied.outcome = Outcome::Denied;
        let mut anon = ev(Category::Tool, "tool.call", "x");
        anon.actor.id = None;
        let recs = records(vec![
            (
                "2026-01-05T10:05:00Z",
                ev(Category::Admin, "user.create", "alice"),
            ),
            (
                "2026-01-05T10:59:59Z",
                ev(Category::Admin, "project.delete", "alice"),
            ),
            ("2026-01-05T11:00:00Z", denied),
            ("2026-01-05T13:30:00Z", anon),
        ]);
        let mut a = Aggregate::default();
        for r in recs {
            a.add(r);
        }
        assert_eq!(a.events, 4);
        assert_eq!(a.categories[Category::Admin as usize], 2);
        assert_eq!(a.outcomes[Outcome::Denied as usize], 1);
        assert_eq!(a.first, Some(t("2026-01-05T10:05:00Z")));
        assert_eq!(a.last, Some(t("2026-01-05T13:30:00Z")));
        let h10 = t("2026-01-05T10:00:00Z").timestamp() / 3600;
        assert_eq!(a.hours[&h10][Category::Admin as usize], 2);
        assert_eq!(a.hours.len(), 3);
        let top = a.actors.top(10);
        assert_eq!(top[0].0, "alice");
        assert_eq!(top[0].1.events, 2);
        assert_eq!(top[1].1.outcomes[Outcome::Denied as usize], 1);
        assert_eq!(a.anonymous, 1);
        assert_eq!(a.admin_groups[&AdminGroup::Users][0], 1);
        assert_eq!(a.admin_groups[&AdminGroup::Projects][0], 1);
        assert_eq!(a.admin_events(), 2);
    }

    #[test]
    fn models_tokens_and_safety() {
        let mut ok = ev(Category::Inference, "llm.chat", "u1");
        ok.gen_ai.provider = Some("openai".into());
        ok.gen_ai.request_model = Some("gpt-4o".into());
        ok.gen_ai.input_tokens = Some(100);
        ok.gen_ai.output_tokens = Some(40);
        ok.duration_ns = Some(2_000_000_000);
        ok.safety.passed = Some(true);
        let mut blocked = ok.clone();
        blocked.event_id = uuid::Uuid::now_v7();
        blocked.outcome = Outcome::Blocked;
        blocked.safety.passed = Some(false);
        blocked.safety.detectors = vec!["jailbreak".into(), "pii_leak".into()];
        blocked.safety.block_reason = Some("policy".into());
        blocked.gen_ai.output_tokens = Some(0);
        blocked.actor.id = Some("mallory".into());
        // A model download names a model but is no model call.
        let mut download = ev(Category::Admin, "model.download", "u1");
        download.gen_ai.request_model = Some("ner".into());
        let recs = records(vec![
            ("2026-01-05T10:00:00Z", ok),
            ("2026-01-05T10:00:01Z", blocked),
            ("2026-01-05T10:00:02Z", download),
        ]);
        let mut a = Aggregate::default();
        for r in recs {
            a.add(r);
        }
        let m = a.models.top(5);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, &("openai".to_owned(), "gpt-4o".to_owned()));
        assert_eq!(m[0].1.calls, 2);
        assert_eq!(m[0].1.blocked, 1);
        assert_eq!((m[0].1.input_tokens, m[0].1.output_tokens), (200, 40));
        assert_eq!(a.tokens(), (200, 40));
        assert_eq!(a.model_calls(), 2);
        assert_eq!(
            (a.safety.checked, a.safety.failed, a.safety.blocked),
            (2, 1, 1)
        );
        assert_eq!(a.safety.detectors.top(5).len(), 2);
        assert_eq!(a.safety.reasons.top(5)[0], (&"policy".to_owned(), &1));
        assert_eq!(a.safety.actors.top(5)[0], (&"mallory".to_owned(), &1));
        assert_eq!(a.admin_groups[&AdminGroup::ModelDownloads][0], 1);
    }

    #[test]
    fn admin_groups_by_action() {
        use AdminGroup as G;
        let cases = [
            (Category::Admin, "project.create", Some(G::Projects)),
            (Category::Admin, "user.delete", Some(G::Users)),
            (
                Category::Admin,
                "config.change.teams",
                Some(G::Configuration),
            ),
            (
                Category::Admin,
                "settings.local_export.disable",
                Some(G::Configuration),
            ),
            (Category::Admin, "task.export", Some(G::ImportExport)),
            (Category::Admin, "model.import", Some(G::ImportExport)),
            (Category::Admin, "model.download", Some(G::ModelDownloads)),
            (Category::Admin, "license.upload", Some(G::Licences)),
            (Category::Governance, "model.approve", Some(G::Governance)),
            (Category::System, "backup.completed", Some(G::Backups)),
            (Category::Compliance, "retention.delete", Some(G::Retention)),
            (Category::System, "collector.start", Some(G::Other)),
            (Category::DataAccess, "dataset.export", None),
            (Category::Inference, "llm.chat", None),
        ];
        for (c, action, want) in cases {
            assert_eq!(AdminGroup::of(c, action), want, "{action}");
        }
    }

    #[test]
    fn top_n_is_bounded_and_keeps_heavy_keys() {
        let mut t: TopN<String, u64> = TopN::new(10);
        for _ in 0..1000 {
            *t.entry("heavy".to_owned()) += 1;
        }
        for i in 0..10_000 {
            *t.entry(format!("k{i}")) += 1;
            assert!(t.len() <= 20);
        }
        assert!(!t.is_exact());
        assert_eq!(t.top(1)[0], (&"heavy".to_owned(), &1000));

        let mut exact: TopN<&str, u64> = TopN::new(10);
        for k in ["b", "a", "b", "c"] {
            *exact.entry(k) += 1;
        }
        assert!(exact.is_exact());
        assert_eq!(exact.top(2), vec![(&"b", &2), (&"a", &1)]);
    }
}
