//! Redaction engine, through the public API: methods, detectors, policies,
//! keys and rotation, and a canary test over whole events.

use std::collections::BTreeMap;

use otel_audit_event::redact::{
    Detector, Keyring, Keys, Method, Policy, PolicyError, RedactError, Redacted, Redactor, Rule,
    decrypt, detect, is_inline_digest, parse_method, verify_digest,
};
use otel_audit_event::{AuditEvent, Category, DigestAlgorithm, RedactionMethod, Sensitive};

const HMAC_KEY: [u8; 32] = *b"0123456789abcdef0123456789abcdef";

fn hmac_ring() -> Keyring {
    Keyring::hmac("hmac-2025", HMAC_KEY).unwrap()
}

fn redactor(policy: Policy) -> Redactor {
    let keys =
        Keys::hmac(hmac_ring()).with_encryption(Keyring::encryption("aes-1", [3u8; 32]).unwrap());
    Redactor::new(policy, keys).unwrap()
}

fn event() -> AuditEvent {
    AuditEvent::new("acme", "chat-api", Category::Inference, "llm.chat")
}

#[test]
fn every_method() {
    let r = redactor(Policy::default());
    let v = "Jane Q. Public, 221B Baker Street";
    let f = "arg.address";

    assert_eq!(r.apply(f, v, &Method::Drop).value, Redacted::Dropped);

    let masked = r.apply(f, v, &parse_method("mask").unwrap());
    assert_eq!(masked.text(), Some("*****************************reet"));
    let masked = r.apply(f, v, &parse_method("mask(6)").unwrap());
    assert!(
        masked.text().unwrap().ends_with("Street") && masked.text().unwrap().starts_with("***")
    );

    let truncated = r.apply(f, v, &"truncate(6)".parse().unwrap());
    assert_eq!(truncated.text(), Some("Jane Q"));
    assert_eq!(truncated.redactions[0].method, RedactionMethod::Truncate);

    let Redacted::Digest(h) = r.apply(f, v, &Method::Hmac).value else {
        panic!("hmac gives a digest")
    };
    assert_eq!(
        (h.algorithm, h.key_id.as_deref()),
        (DigestAlgorithm::HmacSha256, Some("hmac-2025"))
    );
    assert!(verify_digest(&h, v.as_bytes(), Some(&hmac_ring())).unwrap());

    let Redacted::Digest(s) = r.apply(f, v, &Method::Hash).value else {
        panic!("hash gives a digest")
    };
    assert_eq!(
        (s.algorithm, s.key_id.as_deref()),
        (DigestAlgorithm::Sha256, None)
    );
    assert!(verify_digest(&s, v.as_bytes(), None).unwrap());
    assert_ne!(h.digest, s.digest);

    let out = r.apply(f, v, &Method::Encrypt);
    let Redacted::Sealed(sealed) = &out.value else {
        panic!("encrypt gives sealed content")
    };
    assert_eq!(sealed.algorithm, "aes-256-gcm");
    assert_eq!(out.redactions[0].key_id.as_deref(), Some("aes-1"));
    assert_eq!(
        decrypt(sealed, r.keys().encryption.as_ref().unwrap()).unwrap(),
        v.as_bytes()
    );
}

#[test]
fn mask_and_truncate_count_characters() {
    let r = redactor(Policy::default());
    let out = r.apply("arg.name", "Zoë Ångström", &Method::MASK);
    assert_eq!(out.text(), Some("********tröm"));
    let out = r.apply(
        "arg.name",
        "Zoë Ångström",
        &Method::Truncate { max_chars: 3 },
    );
    assert_eq!(out.text(), Some("Zoë"));
    let out = r.apply("arg.name", "🔑🔑🔑🔑", &Method::Truncate { max_chars: 1 });
    assert_eq!(out.text(), Some("🔑"));
}

/// (input, expected output) through the default policy on a non-content field.
#[test]
fn detectors_replace_in_place() {
    let r = redactor(Policy::default());
    let cases: &[(&str, &str)] = &[
        ("mail jane.doe@example.com now", "mail [email:****.com] now"),
        ("call +1 415 555 2671", "call [phone:****2671]"),
        ("call (212) 555-0199.", "call [phone:****0199]."),
        (
            "paid 4111-1111-1111-1111 ok",
            "paid [payment_card:****1111] ok",
        ),
        ("ssn 078-05-1120", "ssn [us_ssn:****1120]"),
        ("from 198.51.100.23", "from [ip_address:****0.23]"),
        ("from 2001:db8::ff00:42:8329", "from [ip_address:****8329]"),
        (
            "auth eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sgn4tUr3",
            "auth [jwt:eyJ****]",
        ),
        (
            "OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
            "OPENAI_API_KEY=[api_key:sk-proj-****]",
        ),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [api_key:AKIA****]"),
        (
            "gh ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            "gh [api_key:ghp_****]",
        ),
        (
            "slack xoxb-2048-4096-AbCdEf123456",
            "slack [api_key:xoxb-****]",
        ),
        (
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrY\n-----END EC PRIVATE KEY-----",
            "[private_key:EC PRIVATE KEY ****]",
        ),
        ("iban GB82 WEST 1234 5698 7654 32", "iban [iban:****5432]"),
    ];
    for (input, want) in cases {
        let out = r.redact_field("log.line", input);
        assert_eq!(out.text(), Some(*want), "input {input:?}");
        assert!(!out.redactions.is_empty());
        assert!(out.redactions.iter().all(|x| x.detector.is_some()));
    }
}

#[test]
fn detectors_leave_lookalikes_alone() {
    let r = redactor(Policy::default());
    for clean in [
        "released v1.2.3 on 2024-01-15 at 10:30:00Z",
        "build 10.0.19045.3803, port 8080, pid 12345",
        "card 4111 1111 1111 1112 (Luhn fails)",
        "ssn 000-12-3456 666-12-3456 912-34-5678 123-00-4567 123-45-0000",
        "order 20240115, total 1234567, ratio 3.14159",
        "Add::add and std::io::Result",
        "IBAN GB82 WEST 1234 5698 7654 33",
        "risk-assessment-pipeline-v2 task-scheduler",
        "eyJ is how base64 JSON starts",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "user@localhost",
    ] {
        let out = r.redact_field("log.line", clean);
        assert!(out.is_clear(), "{clean:?} became {:?}", out.value);
        assert!(detect(clean).is_empty(), "{clean:?}");
    }
}

#[test]
fn every_detector_is_reported_by_name() {
    let text = "a@b.io +44 20 7946 0958 5555555555554444 123-45-6789 10.9.8.7 \
                eyJhbGciOiJub25lIn0.eyJ4IjoxfQ. AKIAIOSFODNN7EXAMPLE \
                -----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY----- DE89370400440532013000";
    let mut found: Vec<Detector> = detect(text).iter().map(|f| f.detector).collect();
    found.sort();
    let mut all = Detector::ALL.to_vec();
    all.sort();
    assert_eq!(found, all);
    let r = redactor(Policy::default());
    let names: Vec<_> = r
        .redact_field("x", text)
        .redactions
        .iter()
        .map(|x| x.detector.clone().unwrap())
        .collect();
    for d in Detector::ALL {
        assert!(names.contains(&d.name().to_owned()), "{d} missing");
    }
}

#[test]
fn default_policy_digests_content() {
    let r = redactor(Policy::default());
    for f in [
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.prompt",
        "gen_ai.completion",
        "prompt",
        "input",
        "output",
        "messages",
        "query",
        "completion",
        "response",
        "arg.prompt",
    ] {
        let out = r.redact_field(f, "hello");
        assert!(matches!(out.value, Redacted::Digest(_)), "{f}");
        assert_eq!(out.redactions[0].method, RedactionMethod::Hmac);
    }
    for f in [
        "gen_ai.request.model",
        "http.route",
        "gen_ai.usage.input_tokens",
    ] {
        assert!(r.redact_field(f, "hello").is_clear(), "{f}");
    }
}

#[test]
fn allowlist_mode_fails_closed() {
    let policy = Policy::from_yaml(
        r#"
redaction:
  mode: allowlist
  allow_fields: [http.route, "gen_ai.request.*", actor.ip]
"#,
    )
    .unwrap();
    let r = redactor(policy);
    let mut ev = event();
    ev.actor.id = Some("jane.doe@example.com".into());
    ev.actor.ip = Some("198.51.100.4".into());
    ev.error.message = Some("Jane's balance is 1,204.55".into());
    ev.attributes
        .insert("gen_ai.request.model".into(), "gpt-4o".into());
    ev.attributes.insert("http.route".into(), "/v1/chat".into());
    ev.attributes
        .insert("new.unreviewed.attr".into(), "Jane Doe, 42 Elm St".into());
    ev.attributes
        .insert("gen_ai.request.note".into(), "mail jane@example.com".into());
    r.redact_event(&mut ev);
    ev.validate().unwrap();

    let json = serde_json::to_string(&ev).unwrap();
    for leaked in [
        "jane.doe@example.com",
        "1,204.55",
        "Jane Doe",
        "Elm St",
        "jane@example.com",
    ] {
        assert!(!json.contains(leaked), "{leaked} leaked: {json}");
    }
    assert_eq!(ev.attributes["gen_ai.request.model"], "gpt-4o");
    assert_eq!(ev.attributes["http.route"], "/v1/chat");
    assert_eq!(
        ev.attributes["gen_ai.request.note"],
        "mail [email:****.com]"
    ); // allowed, still scanned
    assert!(!ev.attributes.contains_key("new.unreviewed.attr"));
    let d = ev
        .content_digests
        .iter()
        .find(|d| d.field == "new.unreviewed.attr")
        .unwrap();
    assert!(verify_digest(d, b"Jane Doe, 42 Elm St", Some(&hmac_ring())).unwrap());
    let id = ev.actor.id.as_deref().unwrap();
    assert!(is_inline_digest(id));
    let expected = hex::encode(
        hmac_ring()
            .hmac_sha256("hmac-2025", b"jane.doe@example.com")
            .unwrap(),
    );
    assert_eq!(id, format!("hmac-sha256:hmac-2025:{expected}"));
    assert_eq!(ev.actor.ip.as_deref(), Some("198.51.100.4"));
}

#[test]
fn yaml_policy_loads_and_validates() {
    let dir = std::env::temp_dir().join(format!("otel-audit-redact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("aes.key");
    std::fs::write(&key_file, hex::encode([9u8; 32])).unwrap();
    let yaml = format!(
        r#"
redaction:
  mode: denylist
  rules:
    - field: "http.request.header.*"
      method: drop
    - field: gen_ai.output.messages
      method: encrypt
    - field: user.card
      method: mask(4)
    - field: user.bio
      method: truncate(10)
    - field: "*.fingerprint"
      method: hash
  content_method: hmac
  detectors:
    enabled: true
    skip_fields: [build.*]
    email: {{ method: hmac }}
    ip_address: {{ enabled: false }}
  keys:
    hmac:
      active: hmac-2025
      keys:
        - id: hmac-2025
          key_hex: "{}"
    encryption:
      active: aes-2
      keys:
        - id: aes-2
          key_file: {}
"#,
        hex::encode(HMAC_KEY),
        key_file.display()
    );
    let policy = Policy::from_yaml(&yaml).unwrap();
    assert_eq!(policy.rules.len(), 5);
    assert_eq!(policy.rules[3].method, Method::Truncate { max_chars: 10 });
    let path = dir.join("policy.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let r = Redactor::from_policy(Policy::from_yaml_file(&path).unwrap()).unwrap();
    assert!(!format!("{r:?}").contains(&hex::encode(HMAC_KEY)));

    assert_eq!(
        r.redact_field("http.request.header.authorization", "Bearer x")
            .value,
        Redacted::Dropped
    );
    assert!(matches!(
        r.redact_field("gen_ai.output.messages", "hi").value,
        Redacted::Sealed(_)
    ));
    assert_eq!(
        r.redact_field("user.bio", "I like long walks").text(),
        Some("I like lon")
    );
    assert!(matches!(
        r.redact_field("device.fingerprint", "abc").value,
        Redacted::Digest(_)
    ));
    assert_eq!(r.redact_field("peer", "10.1.1.1").text(), Some("10.1.1.1"));
    assert!(r.redact_field("build.author", "ci@example.com").is_clear());
    let out = r.redact_field("note", "from ci@example.com");
    assert!(
        out.text()
            .unwrap()
            .starts_with("from [email:hmac-sha256:hmac-2025:")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn yaml_errors_name_the_field() {
    let err = Policy::from_yaml(
        "redaction:\n  rules:\n    - {field: a, method: drop}\n    - {field: b, method: hmac}\n    - {field: c, method: hsah}\n",
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Yaml { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("redaction.rules[2].method: unknown method \"hsah\""),
        "{msg}"
    );

    let err =
        Policy::from_yaml("redaction:\n  rules:\n    - {field: a, method: \"truncate(0)\"}\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("redaction.rules[0].method"), "{err}");

    let err = Policy::from_yaml("redaction:\n  detectors:\n    phone: {method: truncate(5)}\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("redaction.detectors.phone.method: method truncate(5) cannot replace"),
        "{err}"
    );

    let err = Policy::from_yaml("redaction:\n  default_method: hash\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("redaction.default_method is only used when redaction.mode is allowlist"),
        "{err}"
    );
}

#[test]
fn unknown_yaml_fields_are_rejected() {
    for yaml in [
        "redaction:\n  rule: []\n",
        "redaction:\n  keys:\n    hmac:\n      active: k\n      keys:\n        - {id: k, key: abc}\n",
        "redaction:\n  detectors:\n    ssn: {enabled: false}\n",
    ] {
        let err = Policy::from_yaml(yaml).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{yaml}: {err}");
    }
}

#[test]
fn encryption_rotation() {
    let old = Keyring::encryption("aes-2024", [1u8; 32]).unwrap();
    let policy = Policy {
        rules: vec![Rule::new("gen_ai.prompt", Method::Encrypt)],
        ..Policy::default()
    };
    let before = Redactor::new(
        policy.clone(),
        Keys::hmac(hmac_ring()).with_encryption(old.clone()),
    )
    .unwrap();
    let Redacted::Sealed(sealed_old) = before.redact_field("gen_ai.prompt", "old secret").value
    else {
        panic!()
    };
    assert_eq!(sealed_old.key_id, "aes-2024");

    // rotate: a new active key, the old one kept for decryption
    let mut rotated = old.clone();
    rotated.add("aes-2025", [2u8; 32]).unwrap();
    rotated.set_active("aes-2025").unwrap();
    let after = Redactor::new(
        policy,
        Keys::hmac(hmac_ring()).with_encryption(rotated.clone()),
    )
    .unwrap();
    let Redacted::Sealed(sealed_new) = after.redact_field("gen_ai.prompt", "new secret").value
    else {
        panic!()
    };
    assert_eq!(sealed_new.key_id, "aes-2025");
    assert_eq!(sealed_new.nonce.len(), 12);
    assert_eq!(decrypt(&sealed_old, &rotated).unwrap(), b"old secret");
    assert_eq!(decrypt(&sealed_new, &rotated).unwrap(), b"new secret");

    // the old keyring cannot open data sealed under the new key
    assert!(matches!(
        decrypt(&sealed_new, &old),
        Err(RedactError::UnknownKey { .. })
    ));
    // ciphertext moved to another field does not open (the field is the AAD)
    let mut moved = sealed_new.clone();
    moved.field = "gen_ai.completion".into();
    assert!(matches!(
        decrypt(&moved, &rotated),
        Err(RedactError::Decrypt { .. })
    ));
    // ciphertext under a key id that claims another key does not open either
    let mut relabelled = sealed_new.clone();
    relabelled.key_id = "aes-2024".into();
    assert!(decrypt(&relabelled, &rotated).is_err());
    // nor does altered ciphertext
    let mut altered = sealed_new;
    *altered.ciphertext.last_mut().unwrap() ^= 0x80;
    assert!(decrypt(&altered, &rotated).is_err());
}

#[test]
fn hmac_rotation_and_recompute() {
    let before = redactor(Policy::default());
    let Redacted::Digest(d_old) = before.redact_field("prompt", "transfer $500 to Bob").value
    else {
        panic!()
    };
    let mut ring = Keyring::hmac("hmac-2026", [0x55u8; 48]).unwrap();
    ring.add("hmac-2025", HMAC_KEY).unwrap();
    let after = Redactor::new(Policy::default(), Keys::hmac(ring.clone())).unwrap();
    let Redacted::Digest(d_new) = after.redact_field("prompt", "transfer $500 to Bob").value else {
        panic!()
    };
    assert_eq!(d_new.key_id.as_deref(), Some("hmac-2026"));
    assert_ne!(d_old.digest, d_new.digest);
    for d in [&d_old, &d_new] {
        assert!(verify_digest(d, b"transfer $500 to Bob", Some(&ring)).unwrap());
        assert!(!verify_digest(d, b"transfer $501 to Bob", Some(&ring)).unwrap());
    }
    assert!(matches!(
        verify_digest(&d_new, b"x", Some(&hmac_ring())),
        Err(RedactError::UnknownKey { .. })
    ));
    assert!(matches!(
        verify_digest(&d_new, b"x", None),
        Err(RedactError::NoKeyring { .. })
    ));
    // same value, same key: same digest (equality can be checked later)
    let Redacted::Digest(again) = after
        .redact_field("gen_ai.prompt", "transfer $500 to Bob")
        .value
    else {
        panic!()
    };
    assert_eq!(again.digest, d_new.digest);
}

#[test]
fn sensitive_values_through_the_engine() {
    let secret = Sensitive::new(String::from("hunter2-hunter2"));
    assert_eq!(format!("{secret:?}/{secret}"), "[redacted]/[redacted]");
    let r = redactor(Policy::default());
    let out = r.apply("arg.password", secret.expose(), &Method::Hmac);
    let Redacted::Digest(d) = &out.value else {
        panic!()
    };
    assert!(verify_digest(d, b"hunter2-hunter2", Some(&hmac_ring())).unwrap());
    assert!(!format!("{out:?}").contains("hunter2"));
}

#[test]
fn key_errors_never_show_material() {
    let err = Keyring::hmac("k", *b"short-secret-material").unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(!text.contains("short-secret"), "{text}");
    assert!(text.contains("\"k\""), "{text}");
    let ring = Keyring::hmac("k", HMAC_KEY).unwrap();
    let dbg = format!("{ring:?} {:?}", Keys::hmac(ring.clone()));
    assert!(
        !dbg.contains("0123456789abcdef") && !dbg.contains("48, 49, 50"),
        "{dbg}"
    );
}

/// Thirty-plus distinct sensitive values pass through `redact_event`; none may
/// appear in the serialised event, and every digest must be recomputable.
#[test]
fn canary_values_never_reach_the_stored_event() {
    let emails = [
        "canary.one@example.com",
        "c.two+audit@mail.example.org",
        "third_canary@sub.example.net",
        "FOURTH@EXAMPLE.IO",
        "fifth-canary@example.co.uk",
    ];
    let cards = [
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "378282246310005",
        "6011111111111117",
        "4012888888881881",
    ];
    let ssns = ["123-45-6789", "219-09-9999", "078-05-1120", "536-90-4399"];
    let keys = [
        "sk-proj-Zq8xWv7uTs6rQp5oNm4lKj3iHg2fEd1c",
        "sk-ant-api03-Yx7wVu6tSr5qPo4nMl3kJi2hGf1eDc0b",
        "AKIAZ7X6W5V4U3T2S1R0",
        "ghp_Q1w2E3r4T5y6U7i8O9p0A1s2D3f4G5h6J7k8",
        "github_pat_11AAAAAAA0aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbb9",
        "xoxp-1111-2222-3333-abcdef123456",
        "sk_live_51HcanaryCANARY0123456789",
    ];
    let phones = [
        "+1 415 555 2671",
        "+44 20 7946 0958",
        "(212) 555-0199",
        "06 12 34 56 78",
    ];
    let others = [
        "eyJhbGciOiJIUzI1NiJ9.eyJjYW5hcnkiOnRydWV9.c2lnbmF0dXJlMTIz",
        "DE89 3704 0044 0532 0130 00",
        "GB29NWBK60161331926819",
        "203.0.113.195",
        "2001:db8:cafe::17",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEcanaryKEYmaterial\n-----END RSA PRIVATE KEY-----",
    ];
    let prompts = [
        "My name is Canary McCanaryface and my diagnosis is confidential",
        "Summarise the merger memo: Project Bluebird acquires Sparrow Ltd",
        "You are a helpful assistant. Secret instruction: never reveal code 7-alpha-9",
    ];

    let mut attrs: BTreeMap<String, String> = BTreeMap::new();
    let mut i = 0;
    let mut put = |attrs: &mut BTreeMap<String, String>, v: &str| {
        attrs.insert(format!("app.detail.{i}"), format!("value: {v} (end)"));
        i += 1;
    };
    for v in emails
        .iter()
        .chain(&cards)
        .chain(&ssns)
        .chain(&keys)
        .chain(&phones)
        .chain(&others)
    {
        put(&mut attrs, v);
    }
    attrs.insert("gen_ai.input.messages".into(), prompts[0].into());
    attrs.insert("gen_ai.output.messages".into(), prompts[1].into());
    attrs.insert("gen_ai.system_instructions".into(), prompts[2].into());
    attrs.insert("arg.prompt".into(), format!("{} {}", prompts[0], emails[0]));

    let mut ev = event();
    ev.attributes = attrs;
    ev.error.message = Some(format!(
        "failed for {} with card {} and key {}",
        emails[1], cards[0], keys[0]
    ));
    ev.safety.block_reason = Some(format!("SSN {} and phone {} in prompt", ssns[0], phones[1]));
    ev.target.id = Some(format!("customer/{}", emails[2]));

    let canaries: Vec<&str> = emails
        .iter()
        .chain(&cards)
        .chain(&ssns)
        .chain(&keys)
        .chain(&phones)
        .chain(&others)
        .chain(&prompts)
        .copied()
        .collect();
    assert!(canaries.len() >= 30, "{}", canaries.len());

    let before = serde_json::to_string(&ev).unwrap();
    for c in &canaries {
        let escaped = serde_json::to_string(c).unwrap();
        assert!(
            before.contains(escaped.trim_matches('"')),
            "test setup: {c}"
        );
    }

    let r = redactor(Policy::default());
    r.redact_event(&mut ev);
    ev.validate().unwrap();
    let after = serde_json::to_string(&ev).unwrap();
    let compact: String = after.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    for c in &canaries {
        let escaped = serde_json::to_string(c).unwrap();
        assert!(
            !after.contains(escaped.trim_matches('"')),
            "{c} leaked:\n{after}"
        );
        // grouped numbers must not survive with their separators removed either
        let bare: String = c.chars().filter(|ch| !matches!(ch, ' ' | '-')).collect();
        if bare.len() >= 9 {
            assert!(!compact.contains(&bare), "{c} leaked (ungrouped):\n{after}");
        }
    }
    // the prompts became recomputable HMACs
    let ring = hmac_ring();
    for (field, value) in [
        ("gen_ai.input.messages", prompts[0].to_owned()),
        ("gen_ai.output.messages", prompts[1].to_owned()),
        ("gen_ai.system_instructions", prompts[2].to_owned()),
        ("arg.prompt", format!("{} {}", prompts[0], emails[0])),
    ] {
        let d = ev
            .content_digests
            .iter()
            .find(|d| d.field == field)
            .unwrap_or_else(|| panic!("no digest for {field}"));
        assert_eq!(d.algorithm, DigestAlgorithm::HmacSha256);
        assert!(
            verify_digest(d, value.as_bytes(), Some(&ring)).unwrap(),
            "{field}"
        );
        assert!(!verify_digest(d, b"something else", Some(&ring)).unwrap());
    }
    // every detector hit is recorded, by detector, without the value
    let detectors: std::collections::BTreeSet<_> = ev
        .redactions
        .iter()
        .filter_map(|x| x.detector.as_deref())
        .collect();
    for d in Detector::ALL {
        assert!(
            detectors.contains(d.name()),
            "{d} not recorded: {detectors:?}"
        );
    }
    // idempotent: the collector may see events the layer already redacted
    let once = ev.clone();
    r.redact_event(&mut ev);
    assert_eq!(ev, once);
}

#[test]
fn clean_large_values_are_fast_enough() {
    // Not a benchmark: a guard against accidental quadratic behaviour.
    let r = redactor(Policy::default());
    let words = "the quick brown fox 1.2.3 jumps 2024-01-01 over 42 lazy dogs 3 4 5 6 7 8 ";
    let text: String = words.repeat(16 * 1024 / words.len());
    let digits = "1 ".repeat(8 * 1024);
    let start = std::time::Instant::now();
    for _ in 0..20 {
        assert!(r.redact_field("log.line", &text).is_clear());
        assert!(r.redact_field("log.line", &digits).is_clear());
    }
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}
