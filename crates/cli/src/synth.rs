//! A realistic synthetic audit workload, deterministic for a seed.
//!
//! It mixes what an AI platform's audit trail holds: model calls with token
//! counts and safety verdicts, tool calls, data access, security decisions,
//! governance, and the administrative events of an annotation platform
//! (projects, users, settings, licences, import/export, model hub), plus the
//! system's own backups.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use otel_audit_event::{
    ActorType, AuditEvent, Category, Chain, ChainError, ContentDigest, DigestAlgorithm, Outcome,
    Record, Redaction, RedactionMethod, Severity,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// Total events.
    pub events: u64,
    /// Number of tenants (`tenant-01`, ...; the first is `acme`).
    pub tenants: u32,
    /// Chains per tenant (one per simulated collector instance).
    pub chains_per_tenant: u32,
    /// Receive time of the first hour.
    pub start: DateTime<Utc>,
    /// Hours the events are spread over.
    pub hours: u32,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SynthSpec {
    fn default() -> Self {
        SynthSpec {
            events: 10_000,
            tenants: 2,
            chains_per_tenant: 1,
            start: DateTime::parse_from_rfc3339("2026-01-05T00:00:00Z")
                .expect("valid literal")
                .with_timezone(&Utc),
            hours: 24,
            seed: 1,
        }
    }
}

/// Tenant names used by the generator.
pub fn tenant_name(i: u32) -> String {
    const NAMES: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];
    match NAMES.get(i as usize) {
        Some(n) => (*n).to_owned(),
        None => format!("tenant-{i:03}"),
    }
}

/// Chain ids used by the generator: `collector-<n>.<tenant>`.
pub fn chain_name(tenant: &str, c: u32) -> String {
    format!("collector-{}.{tenant}", c + 1)
}

const PROVIDERS: &[(&str, &[&str])] = &[
    ("openai", &["gpt-4o", "gpt-4o-mini", "o3-mini"]),
    ("anthropic", &["claude-sonnet-4", "claude-haiku-4"]),
    ("aws.bedrock", &["amazon.nova-pro", "meta.llama3-70b"]),
    ("azure.ai.openai", &["gpt-4o"]),
    ("gcp.vertex_ai", &["gemini-2.0-flash"]),
];
const TOOLS: &[&str] = &[
    "search_web",
    "sql_query",
    "send_email",
    "read_file",
    "create_ticket",
];
const DETECTORS: &[&str] = &[
    "prompt_injection",
    "pii_leak",
    "harmful_content",
    "jailbreak",
    "toxicity",
];
const ADMIN: &[(&str, &str)] = &[
    ("project.create", "project"),
    ("project.delete", "project"),
    ("user.create", "user"),
    ("user.update", "user"),
    ("user.delete", "user"),
    ("config.change.teams", "project"),
    ("config.change.model_assignment", "project"),
    ("config.change.integration", "integration"),
    ("config.change.labels", "project"),
    ("license.upload", "license"),
    ("license.delete", "license"),
    ("settings.local_export.disable", "setting"),
    ("settings.local_import.disable", "setting"),
    ("task.import", "project"),
    ("task.export", "project"),
    ("model.download", "model"),
    ("model.import", "model"),
    ("model.export", "model"),
];
const GOVERNANCE: &[(&str, &str)] = &[
    ("model.approve", "model"),
    ("model.assign", "project"),
    ("analytics.approve", "project"),
    ("policy.update", "policy"),
];

/// Generates the workload's records, chained, in receive-time order.
pub fn generate(spec: &SynthSpec) -> Result<Vec<Record>, ChainError> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let tenants: Vec<String> = (0..spec.tenants.max(1)).map(tenant_name).collect();
    let mut chains: Vec<Chain> = Vec::new();
    for t in &tenants {
        for c in 0..spec.chains_per_tenant.max(1) {
            chains.push(Chain::new(chain_name(t, c), t.clone())?);
        }
    }
    let span_us = i64::from(spec.hours.max(1)) * 3_600_000_000;
    let mut offsets: Vec<i64> = (0..spec.events)
        .map(|_| rng.random_range(0..span_us))
        .collect();
    offsets.sort_unstable();
    let mut out = Vec::with_capacity(spec.events as usize);
    for off in offsets {
        let received_at = spec.start + Duration::microseconds(off);
        let idx = rng.random_range(0..chains.len());
        let chain = &mut chains[idx];
        let event = synth_event(&mut rng, chain.tenant(), received_at);
        out.push(chain.append(received_at, event)?);
    }
    Ok(out)
}

fn pick<'a, T>(rng: &mut ChaCha8Rng, xs: &'a [T]) -> &'a T {
    &xs[rng.random_range(0..xs.len())]
}

/// SplitMix64 over a few words: stable ids derived from (who, when).
fn mix(words: &[u64]) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for w in words {
        x = (x ^ w).wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    x
}

fn tenant_key(tenant: &str) -> u64 {
    tenant.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hex_id(rng: &mut ChaCha8Rng, bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn digest(rng: &mut ChaCha8Rng, field: &str) -> ContentDigest {
    let mut d = [0u8; 32];
    rng.fill_bytes(&mut d);
    ContentDigest {
        field: field.into(),
        algorithm: DigestAlgorithm::HmacSha256,
        key_id: Some("hmac-2026-01".into()),
        digest: d,
    }
}

fn hmac_redaction(field: &str) -> Redaction {
    Redaction {
        field: field.into(),
        method: RedactionMethod::Hmac,
        detector: None,
        key_id: Some("hmac-2026-01".into()),
    }
}

/// One event received at `received_at`.
pub fn synth_event(rng: &mut ChaCha8Rng, tenant: &str, received_at: DateTime<Utc>) -> AuditEvent {
    let roll: u32 = rng.random_range(0..100);
    let (category, service) = match roll {
        0..55 => (Category::Inference, "chat-api"),
        55..70 => (Category::Tool, "agent-runtime"),
        70..78 => (Category::DataAccess, "annotation-lab"),
        78..83 => (Category::Security, "auth-gateway"),
        83..88 => (Category::Governance, "admin-console"),
        88..98 => (Category::Admin, "admin-console"),
        _ => (Category::System, "otel-audit-collector"),
    };
    let mut ev = AuditEvent::new(tenant, service, category, "");
    let mut random = [0u8; 10];
    rng.fill_bytes(&mut random);
    // Event time precedes receipt by transport latency.
    ev.time = received_at - Duration::microseconds(rng.random_range(500..250_000));
    ev.event_id =
        uuid::Builder::from_unix_timestamp_millis(ev.time.timestamp_millis() as u64, &random)
            .into_uuid();
    ev.service.version = Some(format!(
        "1.{}.{}",
        rng.random_range(2..5),
        rng.random_range(0..10)
    ));
    ev.service.environment = Some(
        if rng.random_bool(0.9) {
            "prod"
        } else {
            "staging"
        }
        .into(),
    );
    ev.service.host = Some(format!("{service}-{}", rng.random_range(0..4)));

    let user = rng.random_range(1..=60u32);
    let (kind, id, role) = match rng.random_range(0..10) {
        0 => (
            ActorType::Service,
            format!("svc-batch-{}", user % 4),
            "service",
        ),
        1 => (ActorType::Agent, format!("agent-{}", user % 6), "agent"),
        _ => (
            ActorType::User,
            format!("user-{user:03}"),
            match user % 10 {
                0 => "admin",
                1..=3 => "supervisor",
                _ => "annotator",
            },
        ),
    };
    ev.actor.kind = Some(kind);
    ev.actor.id = Some(id);
    ev.actor.role = Some(role.into());
    ev.actor.ip = Some(format!(
        "10.{}.{}.{}",
        user % 8,
        user,
        rng.random_range(1..255)
    ));
    // A person's session spans their hour of work, not one event.
    let hour = received_at.timestamp().div_euclid(3600) as u64;
    ev.actor.session = Some(format!(
        "sess-{:012x}",
        mix(&[tenant_key(tenant), u64::from(user), hour]) >> 16
    ));

    match category {
        Category::Inference => {
            let (provider, models) = *pick(rng, PROVIDERS);
            let model = *pick(rng, models);
            ev.action = pick(
                rng,
                &[
                    "llm.chat",
                    "llm.chat",
                    "llm.chat",
                    "llm.completion",
                    "embeddings.create",
                ],
            )
            .to_string();
            let g = &mut ev.gen_ai;
            g.provider = Some(provider.into());
            g.operation = Some(
                match ev.action.as_str() {
                    "embeddings.create" => "embeddings",
                    "llm.completion" => "text_completion",
                    _ => "chat",
                }
                .into(),
            );
            g.request_model = Some(model.into());
            g.response_model = Some(format!("{model}-2025-08-01"));
            g.input_tokens = Some(rng.random_range(20..4000));
            g.output_tokens = Some(if ev.action == "embeddings.create" {
                0
            } else {
                rng.random_range(5..1500)
            });
            // A conversation is a few turns over ten minutes.
            let window = received_at.timestamp().div_euclid(600) as u64;
            g.conversation_id = Some(format!(
                "conv-{:010x}",
                mix(&[tenant_key(tenant), u64::from(user), window, 1]) >> 24
            ));
            g.temperature = Some(f64::from(rng.random_range(0..=10u32)) / 10.0);
            if rng.random_bool(0.3) {
                g.agent_name = Some(
                    pick(rng, &["support-bot", "claims-triage", "coding-assistant"]).to_string(),
                );
            }
            ev.duration_ns = Some(rng.random_range(150_000_000..8_000_000_000));
            ev.trace.trace_id = Some(hex_id(rng, 16));
            ev.trace.span_id = Some(hex_id(rng, 8));
            ev.content_digests
                .push(digest(rng, "gen_ai.input.messages"));
            ev.redactions.push(hmac_redaction("gen_ai.input.messages"));
            if rng.random_bool(0.94) {
                ev.safety.passed = Some(true);
                ev.content_digests
                    .push(digest(rng, "gen_ai.output.messages"));
                ev.redactions.push(hmac_redaction("gen_ai.output.messages"));
            } else {
                ev.safety.passed = Some(false);
                let n = rng.random_range(1..=2);
                for _ in 0..n {
                    let d = pick(rng, DETECTORS).to_string();
                    if !ev.safety.detectors.contains(&d) {
                        ev.safety.detectors.push(d);
                    }
                }
                ev.safety.block_reason = Some("Content violates safety policy".into());
                ev.outcome = Outcome::Blocked;
                ev.severity = Severity::Warn;
                ev.gen_ai.output_tokens = Some(0);
            }
            if rng.random_bool(0.05) {
                ev.attributes
                    .insert("user.email".into(), "****@example.com".into());
                ev.redactions.push(Redaction {
                    field: "user.email".into(),
                    method: RedactionMethod::Mask,
                    detector: Some("email".into()),
                    key_id: None,
                });
            }
            if ev.outcome == Outcome::Success && rng.random_bool(0.02) {
                ev.outcome = Outcome::Failure;
                ev.severity = Severity::Error;
                ev.error.kind = Some(
                    pick(rng, &["RateLimitError", "Timeout", "ContextLengthExceeded"]).to_string(),
                );
                ev.error.message = Some("upstream provider returned an error".into());
            }
        }
        Category::Tool => {
            let tool = *pick(rng, TOOLS);
            ev.action = "tool.call".into();
            ev.gen_ai.operation = Some("execute_tool".into());
            ev.gen_ai.tool_name = Some(tool.into());
            ev.gen_ai.agent_name =
                Some(pick(rng, &["support-bot", "claims-triage", "coding-assistant"]).to_string());
            ev.duration_ns = Some(rng.random_range(5_000_000..2_000_000_000));
            ev.trace.trace_id = Some(hex_id(rng, 16));
            ev.trace.span_id = Some(hex_id(rng, 8));
            ev.trace.parent_span_id = Some(hex_id(rng, 8));
            ev.content_digests
                .push(digest(rng, "gen_ai.tool.call.arguments"));
            ev.redactions
                .push(hmac_redaction("gen_ai.tool.call.arguments"));
            if rng.random_bool(0.05) {
                ev.outcome = Outcome::Failure;
                ev.severity = Severity::Error;
                ev.error.kind = Some("ToolError".into());
                ev.error.message = Some(format!("{tool} failed"));
            }
        }
        Category::DataAccess => {
            let (action, ttype) = *pick(
                rng,
                &[
                    ("document.read", "document"),
                    ("dataset.export", "dataset"),
                    ("vector.search", "collection"),
                ],
            );
            ev.action = action.into();
            ev.target.kind = Some(ttype.into());
            ev.target.id = Some(format!("{ttype}-{}", rng.random_range(1..5000)));
            ev.attributes.insert(
                "documents.count".into(),
                rng.random_range(1..50u32).to_string(),
            );
        }
        Category::Security => {
            let (action, outcome) = *pick(
                rng,
                &[
                    ("auth.login", Outcome::Success),
                    ("auth.login", Outcome::Success),
                    ("auth.login", Outcome::Failure),
                    ("auth.token.issue", Outcome::Success),
                    ("access.check", Outcome::Denied),
                ],
            );
            ev.action = action.into();
            ev.outcome = outcome;
            ev.severity = match outcome {
                Outcome::Success => Severity::Info,
                Outcome::Denied => Severity::Warn,
                _ if rng.random_bool(0.1) => Severity::Critical,
                _ => Severity::Error,
            };
            if outcome == Outcome::Failure {
                ev.error.kind = Some("InvalidCredentials".into());
            }
        }
        Category::Governance | Category::Admin => {
            let (action, ttype) = *pick(
                rng,
                if category == Category::Admin {
                    ADMIN
                } else {
                    GOVERNANCE
                },
            );
            ev.action = action.into();
            ev.target.kind = Some(ttype.into());
            ev.target.id = Some(format!("{ttype}-{}", rng.random_range(1..300)));
            ev.actor.role = Some("admin".into());
            if action.starts_with("config.change") || action.starts_with("settings.") {
                let mut m = BTreeMap::new();
                m.insert("setting.old".into(), "false".into());
                m.insert("setting.new".into(), "true".into());
                ev.attributes.extend(m);
            }
            if action == "model.download" {
                ev.gen_ai.request_model =
                    Some(pick(rng, &["ner_clinical", "deid_large", "assertion_dl"]).to_string());
            }
        }
        Category::System | Category::Compliance => {
            ev.action = pick(rng, &["backup.run", "collector.start", "retention.run"]).to_string();
            ev.actor.kind = Some(ActorType::Service);
            ev.actor.id = Some("otel-audit-collector".into());
            ev.actor.role = Some("system".into());
            ev.actor.ip = None;
            ev.actor.session = None;
            if ev.action == "backup.run" {
                ev.target.kind = Some("bucket".into());
                ev.target.id = Some("s3://audit-backup".into());
            }
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_valid() {
        let spec = SynthSpec {
            events: 500,
            ..SynthSpec::default()
        };
        let a = generate(&spec).unwrap();
        let b = generate(&spec).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 500);
        for r in &a {
            r.event.validate().unwrap();
        }
        let cats: std::collections::BTreeSet<_> = a.iter().map(|r| r.event.category).collect();
        assert!(cats.len() >= 6, "{cats:?}");
    }
}
