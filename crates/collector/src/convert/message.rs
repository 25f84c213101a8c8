//! Rejection messages that name the attribute and never carry a value.
//!
//! `MappingError`'s `Display` quotes some values back (a bad UUID, an unknown
//! enumeration text, a severity text, the event name), which is helpful to a
//! developer but wrong for a collector: rejections are logged and returned to
//! clients, and an attribute's value may be sensitive. [`describe`] rebuilds
//! each message from the attribute name and fixed text only.

use otel_audit_event::otlp::MappingError;

/// Longest message; attribute names come from the payload and may be long.
const MAX_MESSAGE_BYTES: usize = 512;

/// A message for a mapping error: the attribute and what is wrong with it,
/// without the value.
pub(crate) fn describe(err: &MappingError) -> String {
    let text = match err {
        // These name the attribute and types only.
        MappingError::Missing { .. }
        | MappingError::WrongType { .. }
        | MappingError::Duplicate { .. }
        | MappingError::Unknown { .. } => err.to_string(),
        MappingError::Enum { attribute, source } => format!(
            "{attribute} is not a valid {}; expected one of {}",
            source.kind,
            source.expected.join(", ")
        ),
        MappingError::Invalid { attribute, .. } => match invalid_reason(attribute) {
            Some(reason) => format!("{attribute} is invalid: {reason}"),
            None => format!("{attribute} is invalid"),
        },
    };
    cut(text)
}

/// What is wrong with an invalid attribute, from its name alone. The reason
/// of `MappingError::Invalid` is not used: for several attributes it quotes
/// the value. An attribute not listed gets no reason rather than a risk.
fn invalid_reason(attribute: &str) -> Option<&'static str> {
    Some(match attribute {
        "audit.event_id" => "not a UUID",
        "time_unix_nano" => "after the year 2262",
        "severity_number" => "outside 1 to 24",
        "severity_text" => "not a severity (debug, info, warn, error, critical)",
        "event_name" | "event.name" => "disagrees with audit.category",
        a if a.starts_with("audit.content_digests[") && a.ends_with("].digest") => {
            "expected 32 bytes"
        }
        _ => return None,
    })
}

/// Cuts a message to [`MAX_MESSAGE_BYTES`] on a character boundary.
pub(crate) fn cut(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// A tenant for a message: tenants are not secret, but the payload's may be
/// anything, so it is quoted and cut.
pub(crate) fn tenant(t: &str) -> String {
    let short: String = t.chars().take(64).collect();
    format!("{short:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use otel_audit_event::otlp::{OtlpLog, OtlpValue, from_otlp, to_otlp};
    use otel_audit_event::{AuditEvent, Category};

    const CANARY: &str = "CANARY-7f3a9";

    fn log_with(key: &str, value: OtlpValue) -> OtlpLog {
        let mut log = to_otlp(&AuditEvent::new("acme", "svc", Category::Tool, "t"));
        match log.attributes.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => log.attributes.push((key.to_owned(), value)),
        }
        log
    }

    /// Every `from_otlp` error whose `Display` quotes the value: the
    /// rebuilt message names the attribute and leaves the value out.
    #[test]
    fn values_never_reach_the_message() {
        let s = |t: &str| OtlpValue::Str(t.to_owned());
        let cases: Vec<OtlpLog> = vec![
            log_with("audit.event_id", s(CANARY)),
            log_with("audit.outcome", s(CANARY)),
            log_with("audit.category", s(CANARY)),
            log_with("audit.actor.type", s(CANARY)),
            log_with(
                "audit.redactions",
                OtlpValue::Array(vec![OtlpValue::KvList(vec![
                    ("field".into(), s("f")),
                    ("method".into(), s(CANARY)),
                ])]),
            ),
            log_with(
                "audit.content_digests",
                OtlpValue::Array(vec![OtlpValue::KvList(vec![
                    ("field".into(), s("f")),
                    ("algorithm".into(), s(CANARY)),
                    ("digest".into(), OtlpValue::Bytes(vec![0; 32])),
                ])]),
            ),
            {
                let mut l = log_with("audit.tenant", s("acme"));
                l.event_name = format!("audit.{CANARY}");
                l
            },
            {
                let mut l = log_with("audit.category", s("tool"));
                l.event_name = "audit.inference".into();
                l.attributes.push(("x".into(), s(CANARY)));
                l
            },
            {
                let mut l = log_with("audit.tenant", s("acme"));
                l.severity_number = 0;
                l.severity_text = CANARY.into();
                l
            },
        ];
        for log in cases {
            let err = from_otlp(&[], &log).expect_err("must fail");
            let message = describe(&err);
            assert!(!message.contains(CANARY), "{message}");
            assert!(message.starts_with(err.attribute()), "{message}");
        }
    }

    #[test]
    fn messages_explain() {
        let err = MappingError::Enum {
            attribute: "audit.outcome".into(),
            source: "nope"
                .parse::<otel_audit_event::Outcome>()
                .expect_err("not an outcome"),
        };
        assert_eq!(
            describe(&err),
            "audit.outcome is not a valid outcome; expected one of success, failure, denied, blocked"
        );
        let err = MappingError::Invalid {
            attribute: "audit.content_digests[1].digest".into(),
            reason: "expected 32 bytes, got 31".into(),
        };
        assert_eq!(
            describe(&err),
            "audit.content_digests[1].digest is invalid: expected 32 bytes"
        );
        let err = MappingError::Invalid {
            attribute: "something.new".into(),
            reason: CANARY.into(),
        };
        assert_eq!(describe(&err), "something.new is invalid");
    }

    #[test]
    fn long_messages_are_cut() {
        let err = MappingError::Unknown {
            attribute: format!("audit.{}", "é".repeat(600)),
        };
        let m = describe(&err);
        assert!(m.len() <= MAX_MESSAGE_BYTES && m.ends_with("..."));
        assert_eq!(tenant(&"t".repeat(100)).len(), 66);
    }
}
