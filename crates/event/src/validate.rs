//! Validation: the limits every stored event respects.
//!
//! Limits are in bytes of UTF-8. They keep one row small enough that a file of
//! rows stays cheap to scan, and keep free text from smuggling payloads.

use crate::error::ValidationError;
use crate::model::AuditEvent;

/// Longest `action`.
pub const MAX_ACTION_BYTES: usize = 256;
/// Longest identifier-like field (ids, names, models, roles, ...).
pub const MAX_SHORT_BYTES: usize = 256;
/// Longest `error_message` and `safety_block_reason`.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Longest attribute key.
pub const MAX_ATTRIBUTE_KEY_BYTES: usize = 256;
/// Longest attribute value.
pub const MAX_ATTRIBUTE_VALUE_BYTES: usize = 16 * 1024;
/// Most attributes on one event.
pub const MAX_ATTRIBUTES: usize = 256;
/// Most entries in `safety_detectors`, `content_digests`, `sealed_content`, `redactions`.
pub const MAX_LIST_ENTRIES: usize = 256;
/// Largest sealed ciphertext.
pub const MAX_SEALED_BYTES: usize = 256 * 1024;
/// Longest tenant name (it is a path segment).
pub const MAX_TENANT_BYTES: usize = 64;
/// Longest chain id (it is part of a file name).
pub const MAX_CHAIN_ID_BYTES: usize = 128;

/// Checks that `name` can be used as a path segment: `[A-Za-z0-9._-]`, not
/// starting with `.` or `-`, at most `max` bytes.
pub fn check_path_token(name: &str, max: usize) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.len() > max {
        return Err("is too long");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Err("must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("may contain only ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

// The checks below are inlined into `validate` and build their errors in
// separate cold functions: every event passes them all, so the passing path
// is kept to a comparison each.

#[inline]
fn required(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    // `trim().is_empty()`, stopping at the first non-whitespace character
    // instead of trimming both ends.
    if value.chars().all(char::is_whitespace) {
        return Err(missing(field));
    }
    text(field, value, max)
}

#[cold]
fn missing(field: &str) -> ValidationError {
    ValidationError::Missing {
        field: field.to_owned(),
    }
}

#[inline]
fn text(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.len() > max {
        return Err(too_long(field, value.len(), max));
    }
    Ok(())
}

#[cold]
fn too_long(field: &str, len: usize, max: usize) -> ValidationError {
    ValidationError::TooLong {
        field: field.to_owned(),
        len,
        max,
    }
}

#[inline]
fn opt(field: &str, value: &Option<String>, max: usize) -> Result<(), ValidationError> {
    match value {
        Some(v) => text(field, v, max),
        None => Ok(()),
    }
}

#[inline]
fn count(field: &str, n: usize, max: usize) -> Result<(), ValidationError> {
    if n > max {
        return Err(too_many(field, n, max));
    }
    Ok(())
}

#[cold]
fn too_many(field: &str, count: usize, max: usize) -> ValidationError {
    ValidationError::TooMany {
        field: field.to_owned(),
        count,
        max,
    }
}

#[cold]
fn invalid(field: &str, reason: impl Into<String>) -> ValidationError {
    ValidationError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

#[inline]
fn non_negative(field: &str, value: Option<i64>) -> Result<(), ValidationError> {
    match value {
        Some(v) if v < 0 => Err(invalid(field, format!("{v} is negative"))),
        _ => Ok(()),
    }
}

fn lower_hex(field: &str, value: &Option<String>, digits: usize) -> Result<(), ValidationError> {
    if let Some(v) = value {
        // Every byte, without stopping at the first bad one: the loop then
        // compiles to vector compares (every event passes, with its three
        // ids).
        let ok = v.len() == digits
            && v.bytes()
                .fold(true, |ok, b| ok & matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !ok {
            return Err(invalid(
                field,
                format!(
                    "expected {digits} lower-case hex digits, got {:?}",
                    trunc(v)
                ),
            ));
        }
    }
    Ok(())
}

fn trunc(s: &str) -> String {
    s.chars().take(40).collect()
}

impl AuditEvent {
    /// Checks every field against the format's rules. Errors name the field by
    /// its stored column name.
    ///
    /// ```
    /// use otel_audit_event::{AuditEvent, Category};
    /// let mut event = AuditEvent::new("acme", "svc", Category::Inference, "");
    /// let err = event.validate().unwrap_err();
    /// assert_eq!(err.to_string(), "action is required");
    /// event.action = "llm.chat".into();
    /// event.gen_ai.input_tokens = Some(-1);
    /// assert!(event.validate().unwrap_err().to_string().contains("gen_ai_input_tokens"));
    /// ```
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.event_id.is_nil() {
            return Err(ValidationError::Missing {
                field: "event_id".into(),
            });
        }
        if self.time.timestamp() == 0 && self.time.timestamp_subsec_nanos() == 0 {
            return Err(ValidationError::Missing {
                field: "time".into(),
            });
        }
        non_negative("duration_ns", self.duration_ns)?;
        if let Err(reason) = check_path_token(&self.tenant, MAX_TENANT_BYTES) {
            return Err(if self.tenant.is_empty() {
                ValidationError::Missing {
                    field: "tenant".into(),
                }
            } else {
                invalid("tenant", format!("{:?} {reason}", trunc(&self.tenant)))
            });
        }
        required("service_name", &self.service.name, MAX_SHORT_BYTES)?;
        opt("service_version", &self.service.version, MAX_SHORT_BYTES)?;
        opt(
            "service_environment",
            &self.service.environment,
            MAX_SHORT_BYTES,
        )?;
        opt("service_host", &self.service.host, MAX_SHORT_BYTES)?;
        opt("actor_id", &self.actor.id, MAX_SHORT_BYTES)?;
        opt("actor_role", &self.actor.role, MAX_SHORT_BYTES)?;
        opt("actor_ip", &self.actor.ip, MAX_SHORT_BYTES)?;
        opt("actor_session", &self.actor.session, MAX_SHORT_BYTES)?;
        required("action", &self.action, MAX_ACTION_BYTES)?;
        opt("target_type", &self.target.kind, MAX_SHORT_BYTES)?;
        opt("target_id", &self.target.id, MAX_SHORT_BYTES)?;
        opt("error_type", &self.error.kind, MAX_SHORT_BYTES)?;
        opt("error_message", &self.error.message, MAX_MESSAGE_BYTES)?;
        let g = &self.gen_ai;
        opt("gen_ai_provider", &g.provider, MAX_SHORT_BYTES)?;
        opt("gen_ai_operation", &g.operation, MAX_SHORT_BYTES)?;
        opt("gen_ai_request_model", &g.request_model, MAX_SHORT_BYTES)?;
        opt("gen_ai_response_model", &g.response_model, MAX_SHORT_BYTES)?;
        non_negative("gen_ai_input_tokens", g.input_tokens)?;
        non_negative("gen_ai_output_tokens", g.output_tokens)?;
        opt(
            "gen_ai_conversation_id",
            &g.conversation_id,
            MAX_SHORT_BYTES,
        )?;
        opt("gen_ai_agent_name", &g.agent_name, MAX_SHORT_BYTES)?;
        opt("gen_ai_tool_name", &g.tool_name, MAX_SHORT_BYTES)?;
        if g.temperature.is_some_and(|t| !t.is_finite()) {
            return Err(invalid("gen_ai_temperature", "must be a finite number"));
        }
        count(
            "safety_detectors",
            self.safety.detectors.len(),
            MAX_LIST_ENTRIES,
        )?;
        for d in &self.safety.detectors {
            required("safety_detectors", d, MAX_SHORT_BYTES)?;
        }
        opt(
            "safety_block_reason",
            &self.safety.block_reason,
            MAX_MESSAGE_BYTES,
        )?;
        count(
            "content_digests",
            self.content_digests.len(),
            MAX_LIST_ENTRIES,
        )?;
        for d in &self.content_digests {
            required("content_digests.field", &d.field, MAX_SHORT_BYTES)?;
            opt("content_digests.key_id", &d.key_id, MAX_SHORT_BYTES)?;
        }
        count(
            "sealed_content",
            self.sealed_content.len(),
            MAX_LIST_ENTRIES,
        )?;
        for s in &self.sealed_content {
            required("sealed_content.field", &s.field, MAX_SHORT_BYTES)?;
            required("sealed_content.algorithm", &s.algorithm, MAX_SHORT_BYTES)?;
            required("sealed_content.key_id", &s.key_id, MAX_SHORT_BYTES)?;
            if s.nonce.is_empty() || s.nonce.len() > 64 {
                return Err(invalid("sealed_content.nonce", "must be 1 to 64 bytes"));
            }
            if s.ciphertext.len() > MAX_SEALED_BYTES {
                return Err(ValidationError::TooLong {
                    field: "sealed_content.ciphertext".into(),
                    len: s.ciphertext.len(),
                    max: MAX_SEALED_BYTES,
                });
            }
        }
        lower_hex("trace_id", &self.trace.trace_id, 32)?;
        lower_hex("span_id", &self.trace.span_id, 16)?;
        lower_hex("parent_span_id", &self.trace.parent_span_id, 16)?;
        count("attributes", self.attributes.len(), MAX_ATTRIBUTES)?;
        for (k, v) in &self.attributes {
            required("attributes key", k, MAX_ATTRIBUTE_KEY_BYTES)?;
            // The field name is formatted only for the error, not for every
            // attribute of every event.
            if v.len() > MAX_ATTRIBUTE_VALUE_BYTES {
                text(&format!("attributes[{k}]"), v, MAX_ATTRIBUTE_VALUE_BYTES)?;
            }
        }
        count("redactions", self.redactions.len(), MAX_LIST_ENTRIES)?;
        for r in &self.redactions {
            required("redactions.field", &r.field, MAX_SHORT_BYTES)?;
            opt("redactions.detector", &r.detector, MAX_SHORT_BYTES)?;
            opt("redactions.key_id", &r.key_id, MAX_SHORT_BYTES)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Category;

    fn ok_event() -> AuditEvent {
        AuditEvent::new("acme", "svc", Category::Inference, "llm.chat")
    }

    #[test]
    fn accepts_minimal_event() {
        ok_event().validate().unwrap();
    }

    #[test]
    fn names_the_field() {
        let mut e = ok_event();
        e.tenant = "../etc".into();
        assert!(e.validate().unwrap_err().to_string().starts_with("tenant"));
        let mut e = ok_event();
        e.action = "x".repeat(MAX_ACTION_BYTES + 1);
        assert_eq!(
            e.validate().unwrap_err().to_string(),
            "action is 257 bytes long; at most 256 are allowed"
        );
        let mut e = ok_event();
        e.trace.trace_id = Some("ABC".into());
        assert!(
            e.validate()
                .unwrap_err()
                .to_string()
                .starts_with("trace_id")
        );
        let mut e = ok_event();
        e.gen_ai.temperature = Some(f64::NAN);
        assert!(
            e.validate()
                .unwrap_err()
                .to_string()
                .starts_with("gen_ai_temperature")
        );
        let mut e = ok_event();
        e.service.name = " ".into();
        assert_eq!(
            e.validate().unwrap_err().to_string(),
            "service_name is required"
        );
    }

    #[test]
    fn path_tokens() {
        assert!(check_path_token("acme-prod_1.eu", 64).is_ok());
        for bad in ["", ".", "..", "-x", "a/b", "a b", "é"] {
            assert!(check_path_token(bad, 64).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enum_errors_list_choices() {
        let err = "bogus".parse::<Category>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid category \"bogus\": expected one of inference, tool, data_access, security, governance, admin, compliance, system"
        );
    }
}
