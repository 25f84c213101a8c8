//! The OTLP log-record mapping: exact round trips and errors that name the attribute.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use otel_audit_event::otlp::{
    MappingError, OtlpLog, OtlpValue, event_name, from_otlp, is_audit_log, keys,
    resource_attributes, to_otlp,
};
use otel_audit_event::{
    ActorType, AuditEvent, Category, ContentDigest, DigestAlgorithm, Outcome, Redaction,
    RedactionMethod, SealedContent, Severity,
};
use uuid::Uuid;

fn full_event() -> AuditEvent {
    let mut e = AuditEvent::new("acme-prod", "chat-api", Category::Inference, "llm.chat");
    e.event_id = Uuid::parse_str("0194f3a2-7b1c-7def-8abc-0123456789ab").unwrap();
    e.time = Utc.timestamp_opt(1_760_000_000, 123_456_789).unwrap();
    e.duration_ns = Some(1_234_567);
    e.severity = Severity::Warn;
    e.service.version = Some("1.4.2".into());
    e.service.environment = Some("production".into());
    e.service.host = Some("web-3".into());
    e.actor.id = Some("user-17".into());
    e.actor.kind = Some(ActorType::User);
    e.actor.role = Some("analyst".into());
    e.actor.ip = Some("203.0.113.9".into());
    e.actor.session = Some("sess-9".into());
    e.outcome = Outcome::Blocked;
    e.target.kind = Some("document".into());
    e.target.id = Some("doc-42".into());
    e.error.kind = Some("SafetyBlocked".into());
    e.error.message = Some("blocked by policy".into());
    e.gen_ai.provider = Some("openai".into());
    e.gen_ai.operation = Some("chat".into());
    e.gen_ai.request_model = Some("gpt-4o".into());
    e.gen_ai.response_model = Some("gpt-4o-2024-08-06".into());
    e.gen_ai.input_tokens = Some(152);
    e.gen_ai.output_tokens = Some(0);
    e.gen_ai.conversation_id = Some("conv-1".into());
    e.gen_ai.agent_name = Some("support-bot".into());
    e.gen_ai.tool_name = Some("search".into());
    e.gen_ai.temperature = Some(0.7);
    e.safety.passed = Some(false);
    e.safety.detectors = vec!["email".into(), "payment_card".into()];
    e.safety.block_reason = Some("PII in prompt".into());
    e.content_digests = vec![
        ContentDigest {
            field: "gen_ai.input.messages".into(),
            algorithm: DigestAlgorithm::HmacSha256,
            key_id: Some("k1".into()),
            digest: [7; 32],
        },
        ContentDigest {
            field: "arg.query".into(),
            algorithm: DigestAlgorithm::Sha256,
            key_id: None,
            digest: [0xfe; 32],
        },
    ];
    e.sealed_content = vec![SealedContent {
        field: "gen_ai.output.messages".into(),
        algorithm: "aes-256-gcm".into(),
        key_id: "enc-2".into(),
        nonce: vec![1; 12],
        ciphertext: vec![9, 8, 7, 0, 255],
    }];
    e.trace.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
    e.trace.span_id = Some("00f067aa0ba902b7".into());
    e.trace.parent_span_id = Some("53995c3f42cd8ad8".into());
    e.attributes = BTreeMap::from([
        ("http.route".into(), "/v1/chat".into()),
        ("otel_audit.dropped_before".into(), "3".into()),
        ("service.name".into(), "not the service".into()),
        ("note".into(), "ünïcödé \"quoted\"\n".into()),
    ]);
    e.redactions = vec![
        Redaction {
            field: "gen_ai.input.messages".into(),
            method: RedactionMethod::Hmac,
            detector: None,
            key_id: Some("k1".into()),
        },
        Redaction {
            field: "user.email".into(),
            method: RedactionMethod::Mask,
            detector: Some("email".into()),
            key_id: None,
        },
    ];
    e
}

fn attr<'a>(log: &'a OtlpLog, key: &str) -> Option<&'a OtlpValue> {
    log.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn set_attr(log: &mut OtlpLog, key: &str, value: OtlpValue) {
    match log.attributes.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => log.attributes.push((key.into(), value)),
    }
}

fn remove_attr(log: &mut OtlpLog, key: &str) {
    log.attributes.retain(|(k, _)| k != key);
}

#[test]
fn full_event_round_trips_exactly() {
    let e = full_event();
    e.validate().unwrap();
    let log = to_otlp(&e);
    assert_eq!(from_otlp(&[], &log).unwrap(), e);
}

#[test]
fn full_event_record_uses_semantic_conventions() {
    let e = full_event();
    let log = to_otlp(&e);
    assert_eq!(log.event_name, "audit.inference");
    assert_eq!(log.severity_number, 13);
    assert_eq!(log.severity_text, "warn");
    assert_eq!(log.time_unix_nano, 1_760_000_000_123_456_789);
    assert_eq!(
        log.trace_id.map(hex::encode).as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(
        log.span_id.map(hex::encode).as_deref(),
        Some("00f067aa0ba902b7")
    );
    let s = |v: &str| Some(OtlpValue::Str(v.into()));
    assert_eq!(attr(&log, "service.name").cloned(), s("chat-api"));
    assert_eq!(
        attr(&log, "deployment.environment.name").cloned(),
        s("production")
    );
    assert_eq!(attr(&log, "enduser.id").cloned(), s("user-17"));
    assert_eq!(attr(&log, "client.address").cloned(), s("203.0.113.9"));
    assert_eq!(attr(&log, "session.id").cloned(), s("sess-9"));
    assert_eq!(attr(&log, "gen_ai.request.model").cloned(), s("gpt-4o"));
    assert_eq!(attr(&log, "error.type").cloned(), s("SafetyBlocked"));
    assert_eq!(
        attr(&log, "gen_ai.usage.input_tokens").cloned(),
        Some(OtlpValue::Int(152))
    );
    assert_eq!(
        attr(&log, "gen_ai.request.temperature").cloned(),
        Some(OtlpValue::Double(0.7))
    );
    assert_eq!(attr(&log, "audit.tenant").cloned(), s("acme-prod"));
    assert_eq!(attr(&log, "audit.outcome").cloned(), s("blocked"));
    assert_eq!(attr(&log, "audit.attr.http.route").cloned(), s("/v1/chat"));
    assert_eq!(
        attr(&log, "audit.attr.service.name").cloned(),
        s("not the service")
    );
    // Valid ids travel in the record fields, not as attributes.
    assert!(attr(&log, keys::TRACE_ID_TEXT).is_none());
    assert!(attr(&log, keys::SPAN_ID_TEXT).is_none());
    // Keys are unique.
    let mut names: Vec<_> = log.attributes.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), log.attributes.len());
    assert!(is_audit_log(&log));
}

#[test]
fn minimal_event_round_trips_exactly() {
    let e = AuditEvent::new("t", "s", Category::Admin, "user.create");
    let log = to_otlp(&e);
    assert_eq!(from_otlp(&[], &log).unwrap(), e);
    // Nothing optional is emitted.
    let names: Vec<_> = log.attributes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "audit.event_id",
            "audit.tenant",
            "audit.category",
            "audit.action",
            "audit.outcome",
            "service.name"
        ]
    );
    assert_eq!(log.trace_id, None);
    assert_eq!(log.span_id, None);
}

#[test]
fn ids_that_do_not_fit_the_record_fields_travel_as_attributes() {
    let mut e = AuditEvent::new("t", "s", Category::Tool, "tool.run");
    e.trace.trace_id = Some("00000000000000000000000000000000".into());
    e.trace.span_id = Some("NOT-HEX".into());
    let log = to_otlp(&e);
    assert_eq!(log.trace_id, None);
    assert_eq!(log.span_id, None);
    assert_eq!(
        attr(&log, keys::SPAN_ID_TEXT).cloned(),
        Some(OtlpValue::Str("NOT-HEX".into()))
    );
    assert_eq!(from_otlp(&[], &log).unwrap(), e);
}

#[test]
fn service_comes_from_the_resource_when_the_record_has_none() {
    let e = full_event();
    let mut log = to_otlp(&e);
    for k in [
        "service.name",
        "service.version",
        "deployment.environment.name",
        "host.name",
    ] {
        remove_attr(&mut log, k);
    }
    assert_eq!(
        from_otlp(&[], &log).unwrap_err(),
        MappingError::Missing {
            attribute: "service.name".into()
        }
    );
    let resource = resource_attributes(&e.service);
    assert_eq!(from_otlp(&resource, &log).unwrap(), e);

    // The record wins over the resource, as a whole.
    let log = to_otlp(&e);
    let other = resource_attributes(&otel_audit_event::Service {
        name: "other".into(),
        version: Some("9".into()),
        ..Default::default()
    });
    assert_eq!(from_otlp(&other, &log).unwrap(), e);

    // A partial service on the record is refused rather than mixed.
    let mut log = to_otlp(&e);
    remove_attr(&mut log, "service.name");
    let err = from_otlp(&resource, &log).unwrap_err();
    assert_eq!(err.attribute(), "service.name");

    // Wrong type in the resource names the resource attribute.
    let mut log = to_otlp(&e);
    for k in [
        "service.name",
        "service.version",
        "deployment.environment.name",
        "host.name",
    ] {
        remove_attr(&mut log, k);
    }
    let bad = vec![("service.name".to_owned(), OtlpValue::Int(3))];
    assert_eq!(
        from_otlp(&bad, &log).unwrap_err().to_string(),
        "resource service.name has type int; expected string"
    );
    let twice = vec![
        ("host.name".to_owned(), OtlpValue::Str("a".into())),
        ("service.name".to_owned(), OtlpValue::Str("svc".into())),
        ("host.name".to_owned(), OtlpValue::Str("b".into())),
    ];
    assert_eq!(
        from_otlp(&twice, &log).unwrap_err().attribute(),
        "resource host.name"
    );
    let mut ok = twice;
    ok.pop();
    assert_eq!(
        from_otlp(&ok, &log).unwrap().service.host.as_deref(),
        Some("a")
    );
}

/// Applies `change` to the full event's record and returns the mapping error.
fn error_after(change: impl FnOnce(&mut OtlpLog)) -> MappingError {
    let mut log = to_otlp(&full_event());
    change(&mut log);
    from_otlp(&[], &log).expect_err("mapping should fail")
}

#[test]
fn missing_required_attributes_are_named() {
    for key in [
        "audit.event_id",
        "audit.tenant",
        "audit.action",
        "audit.outcome",
        "service.name",
    ] {
        let err = error_after(|log| remove_attr(log, key));
        assert_eq!(
            err,
            MappingError::Missing {
                attribute: key.into()
            },
            "{key}"
        );
        assert_eq!(err.to_string(), format!("{key} is required"));
    }
    let err = error_after(|log| {
        remove_attr(log, "audit.category");
        log.event_name.clear();
    });
    assert_eq!(err.attribute(), "audit.category");
    let err = error_after(|log| log.time_unix_nano = 0);
    assert_eq!(err.to_string(), "time_unix_nano is required");
    let err = error_after(|log| {
        log.severity_number = 0;
        log.severity_text.clear();
    });
    assert_eq!(err.attribute(), "severity_number");
}

#[test]
fn wrong_types_are_named() {
    let cases: Vec<(&str, OtlpValue, &str)> = vec![
        ("audit.event_id", OtlpValue::Int(1), "string"),
        ("audit.tenant", OtlpValue::Bool(true), "string"),
        ("audit.duration_ns", OtlpValue::Str("12".into()), "int"),
        (
            "gen_ai.usage.input_tokens",
            OtlpValue::Str("152".into()),
            "int",
        ),
        ("gen_ai.usage.output_tokens", OtlpValue::Double(1.0), "int"),
        (
            "gen_ai.request.temperature",
            OtlpValue::Str("0.7".into()),
            "double",
        ),
        ("gen_ai.request.model", OtlpValue::Array(vec![]), "string"),
        (
            "audit.safety.passed",
            OtlpValue::Str("false".into()),
            "bool",
        ),
        (
            "audit.safety.detectors",
            OtlpValue::Str("email".into()),
            "array",
        ),
        ("audit.content_digests", OtlpValue::Bytes(vec![]), "array"),
        ("audit.sealed_content", OtlpValue::Int(0), "array"),
        ("audit.redactions", OtlpValue::KvList(vec![]), "array"),
        ("enduser.id", OtlpValue::Int(17), "string"),
        (
            "audit.trace.parent_span_id",
            OtlpValue::Bytes(vec![1]),
            "string",
        ),
    ];
    for (key, value, expected) in cases {
        let found = value.type_name();
        let err = error_after(|log| set_attr(log, key, value));
        assert_eq!(
            err,
            MappingError::WrongType {
                attribute: key.into(),
                expected,
                found
            },
            "{key}"
        );
        assert!(err.to_string().starts_with(key), "{err}");
    }
}

#[test]
fn nested_problems_name_the_element() {
    let err = error_after(|log| {
        set_attr(
            log,
            "audit.safety.detectors",
            OtlpValue::Array(vec![OtlpValue::Str("email".into()), OtlpValue::Int(2)]),
        )
    });
    assert_eq!(err.attribute(), "audit.safety.detectors[1]");

    let err = error_after(|log| {
        let Some(OtlpValue::Array(items)) = attr(log, "audit.content_digests").cloned() else {
            panic!("digests");
        };
        let mut items = items;
        if let OtlpValue::KvList(entries) = &mut items[1] {
            for (k, v) in entries.iter_mut() {
                if k == "digest" {
                    *v = OtlpValue::Bytes(vec![1; 31]);
                }
            }
        }
        set_attr(log, "audit.content_digests", OtlpValue::Array(items));
    });
    assert_eq!(
        err.to_string(),
        "audit.content_digests[1].digest is invalid: expected 32 bytes, got 31"
    );

    let err = error_after(|log| {
        set_attr(
            log,
            "audit.redactions",
            OtlpValue::Array(vec![OtlpValue::KvList(vec![
                ("field".into(), OtlpValue::Str("x".into())),
                ("method".into(), OtlpValue::Str("shred".into())),
            ])]),
        )
    });
    assert_eq!(err.attribute(), "audit.redactions[0].method");
    assert!(
        err.to_string().contains("expected one of drop, mask"),
        "{err}"
    );

    let err = error_after(|log| {
        set_attr(
            log,
            "audit.redactions",
            OtlpValue::Array(vec![OtlpValue::KvList(vec![
                ("field".into(), OtlpValue::Str("x".into())),
                ("method".into(), OtlpValue::Str("drop".into())),
                ("value".into(), OtlpValue::Str("secret".into())),
            ])]),
        )
    });
    assert_eq!(
        err,
        MappingError::Unknown {
            attribute: "audit.redactions[0].value".into()
        }
    );

    let err = error_after(|log| {
        set_attr(
            log,
            "audit.sealed_content",
            OtlpValue::Array(vec![OtlpValue::KvList(vec![(
                "field".into(),
                OtlpValue::Str("x".into()),
            )])]),
        )
    });
    assert_eq!(
        err,
        MappingError::Missing {
            attribute: "audit.sealed_content[0].algorithm".into()
        }
    );

    let err = error_after(|log| {
        set_attr(
            log,
            "audit.sealed_content",
            OtlpValue::Array(vec![OtlpValue::Str("x".into())]),
        )
    });
    assert_eq!(err.attribute(), "audit.sealed_content[0]");
}

#[test]
fn bad_values_are_named() {
    let err = error_after(|log| set_attr(log, "audit.outcome", OtlpValue::Str("won".into())));
    assert_eq!(err.attribute(), "audit.outcome");
    assert!(err.to_string().contains("expected one of success"), "{err}");

    let err = error_after(|log| set_attr(log, "audit.actor.type", OtlpValue::Str("robot".into())));
    assert_eq!(err.attribute(), "audit.actor.type");

    let err = error_after(|log| set_attr(log, "audit.event_id", OtlpValue::Str("nope".into())));
    assert_eq!(err.attribute(), "audit.event_id");
    assert!(err.to_string().contains("not a UUID"), "{err}");

    let err = error_after(|log| log.severity_number = 99);
    assert_eq!(
        err.to_string(),
        "severity_number is invalid: 99 is outside 1 to 24"
    );

    let err = error_after(|log| log.event_name = "audit.tool".into());
    assert_eq!(err.attribute(), "event_name");
    assert!(err.to_string().contains("disagrees"), "{err}");

    let err = error_after(|log| log.event_name = "audit.wizardry".into());
    assert_eq!(err.attribute(), "event_name");

    let err = error_after(|log| log.time_unix_nano = u64::MAX);
    assert_eq!(err.attribute(), "time_unix_nano");
}

#[test]
fn duplicates_and_unknown_audit_attributes_are_refused() {
    let err = error_after(|log| {
        log.attributes
            .push(("audit.tenant".into(), OtlpValue::Str("other".into())))
    });
    assert_eq!(
        err,
        MappingError::Duplicate {
            attribute: "audit.tenant".into()
        }
    );
    let err = error_after(|log| {
        log.attributes
            .push(("gen_ai.usage.input_tokens".into(), OtlpValue::Int(1)))
    });
    assert_eq!(err.attribute(), "gen_ai.usage.input_tokens");
    // An event attribute given both with and without the prefix.
    let err = error_after(|log| {
        log.attributes
            .push(("http.route".into(), OtlpValue::Str("/x".into())))
    });
    assert_eq!(
        err,
        MappingError::Duplicate {
            attribute: "http.route".into()
        }
    );
    // A trace id both in the record field and as text.
    let err = error_after(|log| {
        log.attributes.push((
            keys::TRACE_ID_TEXT.into(),
            OtlpValue::Str("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        ))
    });
    assert_eq!(err.attribute(), keys::TRACE_ID_TEXT);
    let err = error_after(|log| {
        log.attributes
            .push(("audit.actr.type".into(), OtlpValue::Str("user".into())))
    });
    assert_eq!(
        err.to_string(),
        "audit.actr.type is not an attribute of the otel-audit mapping"
    );
}

#[test]
fn records_from_other_sdks_are_read_leniently() {
    // As another SDK would send it: severity text only, event name in an
    // attribute, observed time only, extra attributes of any type.
    let mut e = full_event();
    e.attributes.clear();
    let mut log = to_otlp(&e);
    log.severity_number = 0;
    log.severity_text = "WARNING".into();
    log.observed_time_unix_nano = log.time_unix_nano;
    log.time_unix_nano = 0;
    log.attributes
        .push(("event.name".into(), OtlpValue::Str(log.event_name.clone())));
    log.event_name.clear();
    remove_attr(&mut log, "audit.category");
    set_attr(&mut log, "gen_ai.request.temperature", OtlpValue::Int(1));
    log.attributes
        .push(("code.lineno".into(), OtlpValue::Int(42)));
    log.attributes.push((
        "gen_ai.input.messages".into(),
        OtlpValue::Array(vec![OtlpValue::KvList(vec![
            ("role".into(), OtlpValue::Str("user".into())),
            ("content".into(), OtlpValue::Str("hi \"there\"".into())),
        ])]),
    ));
    log.attributes
        .push(("audit.attr.retries".into(), OtlpValue::Int(2)));
    let got = from_otlp(&[], &log).unwrap();
    let mut want = e;
    want.gen_ai.temperature = Some(1.0);
    want.attributes = BTreeMap::from([
        ("code.lineno".into(), "42".into()),
        (
            "gen_ai.input.messages".into(),
            r#"[{"role":"user","content":"hi \"there\""}]"#.into(),
        ),
        ("retries".into(), "2".into()),
    ]);
    assert_eq!(got, want);
    // Mapping it again is now stable.
    assert_eq!(from_otlp(&[], &to_otlp(&got)).unwrap(), got);
}

#[test]
fn event_names_follow_the_category() {
    for c in Category::ALL {
        assert_eq!(event_name(*c), format!("audit.{}", c.as_str()));
    }
}

// ---------------------------------------------------------------------------
// Property-style: many generated events, each must round-trip exactly, also
// after the record's attributes and kvlist entries are reordered (the Rust SDK
// keeps kvlists in a HashMap).

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a",
            "Z",
            "0",
            "-",
            ".",
            "_",
            " ",
            "é",
            "漢",
            "🦀",
            "\"",
            "\\",
            "\n",
            "\t",
            "\u{0}",
            "audit.",
            "service.name",
            "gen_ai.",
            "=",
            ",",
            "{}",
            "[]",
        ];
        let n = self.below(12);
        (0..n).map(|_| *self.pick(PIECES)).collect()
    }
    fn opt_text(&mut self) -> Option<String> {
        self.chance(60).then(|| self.text())
    }
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn hex(&mut self, digits: usize) -> String {
        (0..digits)
            .map(|_| char::from_digit(self.below(16) as u32, 16).unwrap())
            .collect()
    }
    fn id(&mut self, digits: usize) -> Option<String> {
        match self.below(10) {
            0..=3 => None,
            4..=7 => Some(self.hex(digits)),
            8 => Some("0".repeat(digits)),
            _ => Some(self.text()),
        }
    }
    fn int(&mut self) -> i64 {
        match self.below(4) {
            0 => 0,
            1 => i64::MAX,
            2 => i64::MIN,
            _ => self.next() as i64,
        }
    }
}

fn generate(rng: &mut Rng) -> AuditEvent {
    let mut e = AuditEvent::new(rng.text(), rng.text(), *rng.pick(Category::ALL), rng.text());
    let mut raw = [0u8; 16];
    raw.iter_mut().for_each(|b| *b = rng.next() as u8);
    e.event_id = Uuid::from_bytes(raw);
    let nanos = 1 + (rng.next() % (i64::MAX as u64)) as i64;
    e.time = DateTime::from_timestamp_nanos(nanos);
    e.duration_ns = rng.chance(50).then(|| rng.int());
    e.severity = *rng.pick(Severity::ALL);
    e.outcome = *rng.pick(Outcome::ALL);
    e.service.version = rng.opt_text();
    e.service.environment = rng.opt_text();
    e.service.host = rng.opt_text();
    e.actor.id = rng.opt_text();
    e.actor.kind = rng.chance(50).then(|| *rng.pick(ActorType::ALL));
    e.actor.role = rng.opt_text();
    e.actor.ip = rng.opt_text();
    e.actor.session = rng.opt_text();
    e.target.kind = rng.opt_text();
    e.target.id = rng.opt_text();
    e.error.kind = rng.opt_text();
    e.error.message = rng.opt_text();
    let g = &mut e.gen_ai;
    g.provider = rng.opt_text();
    g.operation = rng.opt_text();
    g.request_model = rng.opt_text();
    g.response_model = rng.opt_text();
    g.input_tokens = rng.chance(50).then(|| rng.int());
    g.output_tokens = rng.chance(50).then(|| rng.int());
    g.conversation_id = rng.opt_text();
    g.agent_name = rng.opt_text();
    g.tool_name = rng.opt_text();
    g.temperature = rng.chance(50).then(|| {
        let v = f64::from_bits(rng.next());
        if v.is_finite() { v } else { -0.0 }
    });
    e.safety.passed = rng.chance(60).then(|| rng.chance(50));
    e.safety.detectors = (0..rng.below(4)).map(|_| rng.text()).collect();
    e.safety.block_reason = rng.opt_text();
    e.content_digests = (0..rng.below(4))
        .map(|_| {
            let mut digest = [0u8; 32];
            digest.iter_mut().for_each(|b| *b = rng.next() as u8);
            ContentDigest {
                field: rng.text(),
                algorithm: *rng.pick(DigestAlgorithm::ALL),
                key_id: rng.opt_text(),
                digest,
            }
        })
        .collect();
    e.sealed_content = (0..rng.below(3))
        .map(|_| SealedContent {
            field: rng.text(),
            algorithm: rng.text(),
            key_id: rng.text(),
            nonce: rng.bytes(16),
            ciphertext: rng.bytes(64),
        })
        .collect();
    e.redactions = (0..rng.below(4))
        .map(|_| Redaction {
            field: rng.text(),
            method: *rng.pick(RedactionMethod::ALL),
            detector: rng.opt_text(),
            key_id: rng.opt_text(),
        })
        .collect();
    e.trace.trace_id = rng.id(32);
    e.trace.span_id = rng.id(16);
    e.trace.parent_span_id = rng.id(16);
    e.attributes = (0..rng.below(6))
        .map(|_| (rng.text(), rng.text()))
        .collect();
    e
}

fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

fn shuffle_value(rng: &mut Rng, v: &mut OtlpValue) {
    match v {
        OtlpValue::Array(items) => items.iter_mut().for_each(|i| shuffle_value(rng, i)),
        OtlpValue::KvList(entries) => {
            shuffle(rng, entries);
            entries.iter_mut().for_each(|(_, v)| shuffle_value(rng, v));
        }
        _ => {}
    }
}

#[test]
fn generated_events_round_trip_exactly() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 {
        let e = generate(&mut rng);
        let mut log = to_otlp(&e);
        assert_eq!(
            from_otlp(&[], &log).as_ref(),
            Ok(&e),
            "event {i} did not round-trip: {log:#?}"
        );
        shuffle(&mut rng, &mut log.attributes);
        for (_, v) in log.attributes.iter_mut() {
            shuffle_value(&mut rng, v);
        }
        assert_eq!(
            from_otlp(&[], &log).as_ref(),
            Ok(&e),
            "event {i} after reordering"
        );
    }
}
