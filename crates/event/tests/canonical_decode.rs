//! `decode_canonical` is the exact inverse of the canonical encoding, and strict.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use otel_audit_event::{
    Actor, ActorType, AuditEvent, Category, ContentDigest, DecodeCanonicalError, DigestAlgorithm,
    ErrorInfo, GenAi, Outcome, Record, Redaction, RedactionMethod, Safety, SealedContent, Service,
    Severity, Target, TraceContext, chain_and_seq, decode_canonical, row_hash,
};
use uuid::Uuid;

/// SplitMix64: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max as u64 + 1) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Text mixing ASCII, multi-byte characters and the odd control character.
    fn text(&mut self, max_chars: usize) -> String {
        const CHARS: &[char] = &[
            'a',
            'z',
            'A',
            '0',
            '9',
            '.',
            '-',
            '_',
            ' ',
            '/',
            '"',
            '\\',
            '\n',
            '\0',
            'é',
            'ü',
            '—',
            '漢',
            '🦀',
            '\u{7f}',
            '\u{10ffff}',
        ];
        let n = self.below(max_chars as u64 + 1) as usize;
        (0..n).map(|_| self.pick(CHARS)).collect()
    }
    fn opt_text(&mut self, max_chars: usize) -> Option<String> {
        self.chance(50).then(|| self.text(max_chars))
    }
    fn opt_i64(&mut self) -> Option<i64> {
        self.chance(50).then(|| self.next() as i64)
    }
    fn array32(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for b in &mut out {
            *b = self.next() as u8;
        }
        out
    }
    /// A time with microsecond precision (what the format stores), anywhere
    /// from 1677 to 2262, including before 1970.
    fn time(&mut self) -> DateTime<Utc> {
        let micros = (self.next() as i64) / 1000;
        DateTime::from_timestamp_micros(micros).unwrap()
    }
}

fn random_record(rng: &mut Rng) -> Record {
    let g = GenAi {
        provider: rng.opt_text(10),
        operation: rng.opt_text(10),
        request_model: rng.opt_text(10),
        response_model: rng.opt_text(10),
        input_tokens: rng.opt_i64(),
        output_tokens: rng.opt_i64(),
        conversation_id: rng.opt_text(10),
        agent_name: rng.opt_text(10),
        tool_name: rng.opt_text(10),
        temperature: rng.chance(50).then(|| f64::from_bits(rng.next())),
    };
    let mut attributes = BTreeMap::new();
    for _ in 0..rng.below(6) {
        attributes.insert(rng.text(8), rng.text(20));
    }
    let event = AuditEvent {
        event_id: Uuid::from_u128(u128::from(rng.next()) << 64 | u128::from(rng.next())),
        time: rng.time(),
        duration_ns: rng.opt_i64(),
        severity: rng.pick(Severity::ALL),
        tenant: rng.text(8),
        service: Service {
            name: rng.text(8),
            version: rng.opt_text(8),
            environment: rng.opt_text(8),
            host: rng.opt_text(8),
        },
        actor: Actor {
            id: rng.opt_text(8),
            kind: rng.chance(50).then(|| rng.pick(ActorType::ALL)),
            role: rng.opt_text(8),
            ip: rng.opt_text(8),
            session: rng.opt_text(8),
        },
        category: rng.pick(Category::ALL),
        action: rng.text(12),
        outcome: rng.pick(Outcome::ALL),
        target: Target {
            kind: rng.opt_text(8),
            id: rng.opt_text(8),
        },
        error: ErrorInfo {
            kind: rng.opt_text(8),
            message: rng.opt_text(30),
        },
        gen_ai: g,
        safety: Safety {
            passed: rng.chance(67).then(|| rng.chance(50)),
            detectors: (0..rng.below(4)).map(|_| rng.text(8)).collect(),
            block_reason: rng.opt_text(20),
        },
        content_digests: (0..rng.below(4))
            .map(|_| ContentDigest {
                field: rng.text(10),
                algorithm: rng.pick(DigestAlgorithm::ALL),
                key_id: rng.opt_text(5),
                digest: rng.array32(),
            })
            .collect(),
        sealed_content: (0..rng.below(3))
            .map(|_| SealedContent {
                field: rng.text(10),
                algorithm: rng.text(10),
                key_id: rng.text(5),
                nonce: rng.bytes(16),
                ciphertext: rng.bytes(64),
            })
            .collect(),
        trace: TraceContext {
            trace_id: rng.opt_text(32),
            span_id: rng.opt_text(16),
            parent_span_id: rng.opt_text(16),
        },
        attributes,
        redactions: (0..rng.below(4))
            .map(|_| Redaction {
                field: rng.text(10),
                method: rng.pick(RedactionMethod::ALL),
                detector: rng.opt_text(8),
                key_id: rng.opt_text(5),
            })
            .collect(),
    };
    Record {
        received_at: rng.time(),
        event,
        chain_id: rng.text(10),
        seq: rng.next() >> 1,
        prev_hash: rng.array32(),
        hash: rng.array32(),
    }
}

fn full_record() -> Record {
    let mut attributes = BTreeMap::new();
    attributes.insert("http.route".to_owned(), "/v1/chat".to_owned());
    attributes.insert("zeta".to_owned(), "ünïcödé — ok".to_owned());
    attributes.insert(String::new(), "empty key".to_owned());
    Record {
        received_at: DateTime::from_timestamp_micros(1_760_000_000_123_456).unwrap(),
        event: AuditEvent {
            event_id: Uuid::parse_str("01940000-0000-7000-8000-000000000002").unwrap(),
            time: DateTime::from_timestamp_micros(1_760_000_000_000_001).unwrap(),
            duration_ns: Some(1_234_567),
            severity: Severity::Critical,
            tenant: "acme".into(),
            service: Service {
                name: "chat-api".into(),
                version: Some("1.2.3".into()),
                environment: Some("prod".into()),
                host: Some("host-a".into()),
            },
            actor: Actor {
                id: Some("user-2".into()),
                kind: Some(ActorType::Agent),
                role: Some("annotator".into()),
                ip: Some("10.0.0.7".into()),
                session: Some("sess-1".into()),
            },
            category: Category::DataAccess,
            action: "llm.chat".into(),
            outcome: Outcome::Blocked,
            target: Target {
                kind: Some("document".into()),
                id: Some("doc-9".into()),
            },
            error: ErrorInfo {
                kind: Some("Timeout".into()),
                message: Some("upstream timed out".into()),
            },
            gen_ai: GenAi {
                provider: Some("openai".into()),
                operation: Some("chat".into()),
                request_model: Some("gpt-4o".into()),
                response_model: Some("gpt-4o-2025-08-01".into()),
                input_tokens: Some(102),
                output_tokens: Some(0),
                conversation_id: Some("conv-1".into()),
                agent_name: Some("support-bot".into()),
                tool_name: Some("search".into()),
                temperature: Some(-0.0),
            },
            safety: Safety {
                passed: Some(false),
                detectors: vec!["pii_leak".into(), "jailbreak".into()],
                block_reason: Some("policy".into()),
            },
            content_digests: vec![
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
                    digest: [9; 32],
                },
            ],
            sealed_content: vec![SealedContent {
                field: "gen_ai.output.messages".into(),
                algorithm: "aes-256-gcm".into(),
                key_id: "enc-1".into(),
                nonce: vec![1; 12],
                ciphertext: vec![0xab; 40],
            }],
            trace: TraceContext {
                trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
                span_id: Some("b7ad6b7169203331".into()),
                parent_span_id: Some("00f067aa0ba902b7".into()),
            },
            attributes,
            redactions: vec![
                Redaction {
                    field: "arg.password".into(),
                    method: RedactionMethod::Drop,
                    detector: None,
                    key_id: None,
                },
                Redaction {
                    field: "gen_ai.input.messages".into(),
                    method: RedactionMethod::Hmac,
                    detector: Some("email".into()),
                    key_id: Some("k1".into()),
                },
            ],
        },
        chain_id: "collector-1.acme".into(),
        seq: i64::MAX as u64,
        prev_hash: [1; 32],
        hash: [2; 32],
    }
}

fn minimal_record() -> Record {
    let mut event = AuditEvent::new("t", "s", Category::Admin, "a");
    event.event_id = Uuid::from_u128(1);
    event.time = DateTime::from_timestamp_micros(1).unwrap();
    Record {
        received_at: DateTime::from_timestamp_micros(0).unwrap(),
        event,
        chain_id: "c".into(),
        seq: 0,
        prev_hash: [0; 32],
        hash: [0; 32],
    }
}

fn encode(r: &Record) -> Vec<u8> {
    let mut out = Vec::new();
    r.canonical_bytes(&mut out);
    out
}

/// Decodes and checks both directions: the record comes back equal, and
/// re-encoding the decoded record gives the same bytes.
fn assert_round_trip(r: &Record) {
    let bytes = encode(r);
    let back = decode_canonical(&bytes, r.prev_hash, r.hash).expect("decodes");
    // f64 NaN != NaN: compare temperatures by bits, everything else by value.
    let bits = |r: &Record| r.event.gen_ai.temperature.map(f64::to_bits);
    assert_eq!(bits(&back), bits(r));
    let mut a = back.clone();
    let mut b = r.clone();
    a.event.gen_ai.temperature = None;
    b.event.gen_ai.temperature = None;
    assert_eq!(a, b);
    assert_eq!(encode(&back), bytes);
}

fn decode_err(bytes: &[u8]) -> DecodeCanonicalError {
    decode_canonical(bytes, [0; 32], [0; 32]).expect_err("must be rejected")
}

/// The offset of the first occurrence of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn fully_populated_record_round_trips() {
    assert_round_trip(&full_record());
}

#[test]
fn minimal_record_round_trips() {
    assert_round_trip(&minimal_record());
}

#[test]
fn many_random_records_round_trip() {
    let mut rng = Rng(0x5eed);
    for _ in 0..5000 {
        assert_round_trip(&random_record(&mut rng));
    }
}

#[test]
fn a_chained_record_decodes_and_its_hash_verifies() {
    let mut chain = otel_audit_event::Chain::new("c1.acme", "acme").unwrap();
    let mut event = AuditEvent::new("acme", "svc", Category::Inference, "llm.chat");
    event.gen_ai.request_model = Some("gpt-4o".into());
    // Nanoseconds are not stored: the decoded row has the stored precision,
    // and its hash is the same.
    let record = chain.append(Utc::now(), event).unwrap();
    let bytes = encode(&record);
    let back = decode_canonical(&bytes, record.prev_hash, record.hash).unwrap();
    assert_eq!(row_hash(&back.prev_hash, &bytes), back.hash);
    assert_eq!(back.compute_hash(&mut Vec::new()), record.hash);
    assert_eq!(back.event.event_id, record.event.event_id);
    assert_eq!(
        back.event.time.timestamp_micros(),
        record.event.time.timestamp_micros()
    );
}

#[test]
fn the_interop_vector_decodes_to_its_record() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/vectors/row-v1.json"
    ))
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let canonical = hex::decode(v["canonical_hex"].as_str().unwrap()).unwrap();
    let hex32 = |key: &str| -> [u8; 32] {
        hex::decode(v[key].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    let expected: Record = serde_json::from_value(v["record"].clone()).unwrap();
    let back = decode_canonical(&canonical, hex32("prev_hash_hex"), hex32("hash_hex")).unwrap();
    assert_eq!(back, expected);
    assert_eq!(row_hash(&back.prev_hash, &canonical), back.hash);
}

#[test]
fn every_truncation_is_rejected() {
    for r in [full_record(), minimal_record()] {
        let bytes = encode(&r);
        for len in 0..bytes.len() {
            match decode_err(&bytes[..len]) {
                DecodeCanonicalError::Truncated { offset, .. } => assert!(offset <= len),
                other => panic!("prefix of {len} bytes: unexpected {other}"),
            }
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = encode(&minimal_record());
    let end = bytes.len();
    bytes.push(0);
    assert_eq!(
        decode_err(&bytes),
        DecodeCanonicalError::Trailing {
            offset: end,
            count: 1
        }
    );
}

#[test]
fn a_bad_enum_text_names_the_field() {
    let mut r = minimal_record();
    r.event.severity = Severity::Debug;
    r.event.outcome = Outcome::Denied;
    let mut bytes = encode(&r);
    let at = find(&bytes, b"debug");
    bytes[at..at + 5].copy_from_slice(b"DEBUG");
    let err = decode_err(&bytes);
    assert!(
        matches!(err, DecodeCanonicalError::Enum { field: "severity", offset, .. } if offset == at)
    );
    assert!(err.to_string().contains("severity"), "{err}");

    let mut bytes = encode(&r);
    let at = find(&bytes, b"denied");
    bytes[at] = b'x';
    assert!(matches!(
        decode_err(&bytes),
        DecodeCanonicalError::Enum {
            field: "outcome",
            ..
        }
    ));
}

#[test]
fn bad_utf8_names_the_field() {
    let mut r = minimal_record();
    r.event.action = "act\u{e9}".into();
    let mut bytes = encode(&r);
    let at = find(&bytes, "act\u{e9}".as_bytes());
    // Cut the two-byte character in half: "act" 0xc3 0x41.
    bytes[at + 4] = b'A';
    let err = decode_err(&bytes);
    assert_eq!(
        err,
        DecodeCanonicalError::Utf8 {
            field: "action",
            offset: at
        }
    );
    assert!(err.to_string().contains("action"), "{err}");
}

#[test]
fn bad_presence_bytes_are_rejected() {
    let bytes = encode(&minimal_record());
    // The very first byte is event_id's presence byte.
    let mut b = bytes.clone();
    b[0] = 2;
    assert_eq!(
        decode_err(&b),
        DecodeCanonicalError::Presence {
            field: "event_id",
            offset: 0,
            byte: 2
        }
    );
    // event_id is never null.
    b[0] = 0;
    assert!(matches!(
        decode_err(&b),
        DecodeCanonicalError::Presence {
            field: "event_id",
            byte: 0,
            ..
        }
    ));
    // duration_ns (null here) comes right after the two timestamps.
    let at = 1 + 4 + 36 + 9 + 9;
    let mut b = bytes.clone();
    assert_eq!(b[at], 0);
    b[at] = 7;
    assert!(matches!(
        decode_err(&b),
        DecodeCanonicalError::Presence {
            field: "duration_ns",
            byte: 7,
            ..
        }
    ));
}

#[test]
fn values_the_encoder_never_writes_are_rejected() {
    let r = minimal_record();
    let bytes = encode(&r);

    // An upper-case UUID.
    let mut r2 = r.clone();
    r2.event.event_id = Uuid::from_u128(0xabc);
    let mut b = encode(&r2);
    let at = find(&b, b"000000000abc");
    b[at + 9] = b'A';
    assert!(matches!(
        decode_err(&b),
        DecodeCanonicalError::Invalid {
            field: "event_id",
            ..
        }
    ));

    // A negative seq (the last 8 bytes).
    let mut b = bytes.clone();
    let n = b.len();
    b[n - 8] = 0x80;
    assert!(matches!(
        decode_err(&b),
        DecodeCanonicalError::Invalid { field: "seq", .. }
    ));

    // A bool that is neither 0 nor 1.
    let mut r2 = r.clone();
    r2.event.safety.passed = Some(true);
    r2.event.gen_ai.temperature = None;
    let b = encode(&r2);
    // safety_passed is the byte pair 01 01 right before the detectors list 01 00000000.
    let at = find(&b, &[1, 1, 1, 0, 0, 0, 0]);
    let mut b2 = b.clone();
    b2[at + 1] = 2;
    assert!(matches!(
        decode_err(&b2),
        DecodeCanonicalError::Invalid {
            field: "safety_passed",
            ..
        }
    ));

    // A content digest of the wrong length.
    let mut r2 = r.clone();
    r2.event.content_digests.push(ContentDigest {
        field: "f".into(),
        algorithm: DigestAlgorithm::Sha256,
        key_id: None,
        digest: [0x55; 32],
    });
    let b = encode(&r2);
    let at = find(&b, &[0x55; 32]);
    let mut b2 = b[..at - 4].to_vec();
    b2.extend_from_slice(&31u32.to_be_bytes());
    b2.extend_from_slice(&b[at + 1..]);
    assert!(matches!(
        decode_err(&b2),
        DecodeCanonicalError::Invalid {
            field: "content_digests.digest",
            ..
        }
    ));

    // Attribute keys out of order (the encoder writes a sorted map).
    let mut r2 = r.clone();
    r2.event.attributes.insert("ka".into(), "v".into());
    r2.event.attributes.insert("kb".into(), "v".into());
    let mut b = encode(&r2);
    let at = find(&b, b"ka");
    b[at + 1] = b'c';
    assert!(matches!(
        decode_err(&b),
        DecodeCanonicalError::Invalid {
            field: "attributes.key",
            ..
        }
    ));
    // ... or repeated.
    b[at + 1] = b'b';
    assert!(matches!(
        decode_err(&b),
        DecodeCanonicalError::Invalid {
            field: "attributes.key",
            ..
        }
    ));

    // A timestamp outside what the model can represent.
    let mut b = bytes.clone();
    let at = 1 + 4 + 36 + 1; // time's value
    b[at..at + 8].copy_from_slice(&i64::MAX.to_be_bytes());
    assert!(matches!(
        decode_err(&b),
        DecodeCanonicalError::Invalid { field: "time", .. }
    ));
}

#[test]
fn a_huge_list_count_is_rejected_without_allocating() {
    let r = minimal_record();
    let b = encode(&r);
    // safety_detectors: the first `01 00000000` after safety_passed (null).
    let at = find(&b, &[0, 1, 0, 0, 0, 0]) + 1;
    let mut b2 = b.clone();
    b2[at + 1..at + 5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode_err(&b2),
        DecodeCanonicalError::Truncated {
            field: "safety_detectors",
            ..
        }
    ));
}

/// Random corruption never panics, and whatever still decodes re-encodes to
/// exactly the same bytes: the encoding has one byte form per record.
#[test]
fn mutated_bytes_either_fail_or_are_canonical() {
    let mut rng = Rng(42);
    let mut decoded = 0;
    for i in 0..3000 {
        let r = if i % 3 == 0 {
            full_record()
        } else {
            random_record(&mut rng)
        };
        let mut bytes = encode(&r);
        for _ in 0..=rng.below(3) {
            let at = rng.below(bytes.len() as u64) as usize;
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = rng.next() as u8,
                _ => {
                    bytes.remove(at);
                }
            }
        }
        if let Ok(back) = decode_canonical(&bytes, r.prev_hash, r.hash) {
            decoded += 1;
            assert_eq!(
                encode(&back),
                bytes,
                "mutation {i} decoded to another encoding"
            );
        }
    }
    // Some mutations (inside text) keep the bytes valid: the check above ran.
    assert!(decoded > 0);
}

#[test]
fn chain_and_seq_reads_the_tail_exactly_for_every_id_length() {
    let mut rng = Rng(7);
    const TOKEN: &[u8] = b"abcXYZ0189._-";
    for len in 1..=otel_audit_event::MAX_CHAIN_ID_BYTES {
        // Every length, so the length field's low byte is a token byte
        // ('-', '.', digits, letters) for some of them.
        for _ in 0..4 {
            let mut r = random_record(&mut rng);
            let mut id: Vec<u8> = (0..len).map(|_| rng.pick(TOKEN)).collect();
            id[0] = b'c';
            r.chain_id = String::from_utf8(id).unwrap();
            r.seq = rng.next() >> 1;
            let bytes = encode(&r);
            assert_eq!(
                chain_and_seq(&bytes),
                Some((r.chain_id.as_str(), r.seq)),
                "len {len}"
            );
            // A length field or presence byte that does not fit is no reading.
            let n = bytes.len();
            for at in [n - 9, n - 9 - len - 5, n - 9 - len - 1] {
                let mut bad = bytes.clone();
                bad[at] ^= 0x40;
                assert_eq!(chain_and_seq(&bad), None, "len {len}, byte {at} changed");
            }
        }
    }
    // Ids that are not path tokens are not read from the tail.
    for id in ["a b", ".hidden", "-x", "é", "c1\u{1}"] {
        let mut r = minimal_record();
        r.chain_id = id.into();
        assert_eq!(chain_and_seq(&encode(&r)), None, "{id:?}");
    }
    let mut r = minimal_record();
    r.chain_id = "x".repeat(otel_audit_event::MAX_CHAIN_ID_BYTES + 1);
    assert_eq!(chain_and_seq(&encode(&r)), None);
}

/// `Chain::link_into` (the collector's way, the event kept by the caller)
/// gives the bytes, links and errors `append_into` gives.
#[test]
fn linking_an_event_in_place_is_appending_it() {
    use otel_audit_event::Chain;
    let mut rng = Rng(7);
    let (mut by_record, mut in_place) = (
        Chain::new("c1.acme", "acme").unwrap(),
        Chain::new("c1.acme", "acme").unwrap(),
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let received = DateTime::from_timestamp_micros(1_760_000_000_000_000).unwrap();
    let mut appended = 0;
    for i in 0..300u128 {
        // Valid events, another tenant's, and random ones (mostly invalid).
        let mut event = match i % 3 {
            0 => random_record(&mut rng).event,
            _ => {
                let mut e = full_record().event;
                e.attributes.remove("");
                e
            }
        };
        event.event_id = Uuid::from_u128(0x0194_0000_0000_7000_8000_0000_0000_0000 | i);
        if i % 7 != 0 {
            event.tenant = "acme".into();
        }
        let (before_a, before_b) = (a.len(), b.len());
        let link = in_place.link_into(received, &event, &mut b);
        match by_record.append_into(received, event, &mut a) {
            Ok(record) => {
                assert_eq!(link.unwrap(), record.link(), "{i}");
                appended += 1;
            }
            Err(e) => {
                assert_eq!(link.unwrap_err().to_string(), e.to_string(), "{i}");
                assert_eq!((a.len(), b.len()), (before_a, before_b), "{i}");
            }
        }
        assert_eq!(a, b, "{i}");
    }
    assert!(appended > 150 && appended < 300, "{appended}");
    assert_eq!(in_place.next_seq(), appended);
    assert_eq!(in_place.head(), by_record.head());
}
