//! Records for storage tests: every field of the format exercised.

#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use otel_audit_event::{
    ActorType, AuditEvent, Category, Chain, ContentDigest, DigestAlgorithm, Outcome, Record,
    Redaction, RedactionMethod, SealedContent, Severity,
};
use otel_audit_storage::{Store, WriteOutcome, WriterOptions, split_runs, write_file};

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).unwrap()
}

/// An event with every optional field set when `i` is even, few when odd.
pub fn event(tenant: &str, i: u64) -> AuditEvent {
    let mut e = AuditEvent::new(tenant, "chat-api", Category::Inference, "llm.chat");
    e.event_id = uuid::Uuid::from_u128(0x0194_0000_0000_7000_8000_0000_0000_0000 | u128::from(i));
    e.time = t0() + Duration::milliseconds(i as i64 * 997);
    if i % 2 == 1 {
        e.category = Category::Admin;
        e.action = "project.delete".into();
        e.outcome = Outcome::Denied;
        e.severity = Severity::Warn;
        return e;
    }
    e.duration_ns = Some(1_234_567 + i as i64);
    e.service.version = Some("1.2.3".into());
    e.service.environment = Some("prod".into());
    e.service.host = Some("host-a".into());
    e.actor.id = Some(format!("user-{i}"));
    e.actor.kind = Some(ActorType::User);
    e.actor.role = Some("annotator".into());
    e.actor.ip = Some("10.0.0.7".into());
    e.actor.session = Some("sess-1".into());
    e.target.kind = Some("document".into());
    e.target.id = Some("doc-9".into());
    e.error.kind = Some("Timeout".into());
    e.error.message = Some("upstream timed out — ünïcödé".into());
    e.gen_ai.provider = Some("openai".into());
    e.gen_ai.operation = Some("chat".into());
    e.gen_ai.request_model = Some("gpt-4o".into());
    e.gen_ai.response_model = Some("gpt-4o-2025-08-01".into());
    e.gen_ai.input_tokens = Some(100 + i as i64);
    e.gen_ai.output_tokens = Some(0);
    e.gen_ai.conversation_id = Some("conv-1".into());
    e.gen_ai.agent_name = Some("support-bot".into());
    e.gen_ai.tool_name = Some("search".into());
    e.gen_ai.temperature = Some(-0.0);
    e.safety.passed = Some(false);
    e.safety.detectors = vec!["pii_leak".into(), "jailbreak".into()];
    e.safety.block_reason = Some("policy".into());
    e.content_digests.push(ContentDigest {
        field: "gen_ai.input.messages".into(),
        algorithm: DigestAlgorithm::HmacSha256,
        key_id: Some("k1".into()),
        digest: [7; 32],
    });
    e.content_digests.push(ContentDigest {
        field: "arg.query".into(),
        algorithm: DigestAlgorithm::Sha256,
        key_id: None,
        digest: [9; 32],
    });
    e.sealed_content.push(SealedContent {
        field: "gen_ai.output.messages".into(),
        algorithm: "aes-256-gcm".into(),
        key_id: "enc-1".into(),
        nonce: vec![1; 12],
        ciphertext: vec![0xab; 40],
    });
    e.trace.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    e.trace.span_id = Some("00f067aa0ba902b7".into());
    e.trace.parent_span_id = Some("00f067aa0ba902b8".into());
    e.attributes.insert("zeta".into(), "last".into());
    e.attributes.insert("alpha".into(), "first".into());
    e.attributes.insert("empty".into(), String::new());
    e.redactions.push(Redaction {
        field: "gen_ai.input.messages".into(),
        method: RedactionMethod::Hmac,
        detector: None,
        key_id: Some("k1".into()),
    });
    e.redactions.push(Redaction {
        field: "user.email".into(),
        method: RedactionMethod::Mask,
        detector: Some("email".into()),
        key_id: None,
    });
    e
}

/// `per_chain` records for each of two tenants' chains, received over three hours.
pub fn records(per_chain: u64) -> Vec<Record> {
    let mut out = Vec::new();
    for tenant in ["acme", "globex"] {
        let mut chain = Chain::new(format!("c1.{tenant}"), tenant).unwrap();
        for i in 0..per_chain {
            let received = t0() + Duration::seconds((i * 3 * 3600 / per_chain) as i64);
            out.push(chain.append(received, event(tenant, i)).unwrap());
        }
    }
    out
}

/// Writes records in files of at most `max_rows`, asserting each was created.
pub async fn write_all(store: &Store, records: Vec<Record>, max_rows: usize) -> usize {
    let runs = split_runs(records, max_rows);
    let n = runs.len();
    for run in runs {
        let (_, outcome) = write_file(store, run, &WriterOptions::default())
            .await
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Written);
    }
    n
}
