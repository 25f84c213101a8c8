//! The audit event and the enumerations auditors filter on.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ParseEnumError;

/// Declares a closed enumeration stored as lower-case text, with `as_str`,
/// `FromStr` (errors list the accepted values) and serde as that text.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $kind:literal, { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "&'static str")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every accepted value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The accepted texts, in declaration order.
            pub const TEXTS: &'static [&'static str] = &[$($text),+];

            /// The stored text of this value.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(ParseEnumError {
                        kind: $kind,
                        value: other.chars().take(64).collect(),
                        expected: Self::TEXTS,
                    }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseEnumError;
            fn try_from(s: String) -> Result<Self, ParseEnumError> {
                s.parse()
            }
        }

        impl From<$name> for &'static str {
            fn from(v: $name) -> Self {
                v.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// How serious an event is, as the multi-level loggers auditors know.
    Severity, "severity", {
        /// Diagnostic detail.
        Debug => "debug",
        /// Normal operation.
        Info => "info",
        /// Something unusual that did not fail.
        Warn => "warn",
        /// A failure.
        Error => "error",
        /// A failure that needs attention now.
        Critical => "critical",
    }
);

text_enum!(
    /// What kind of activity an event records.
    Category, "category", {
        /// A model call (chat, completion, embedding, ...).
        Inference => "inference",
        /// A tool or function run by an agent or application.
        Tool => "tool",
        /// Reading or exporting data.
        DataAccess => "data_access",
        /// Authentication, authorisation, safety enforcement.
        Security => "security",
        /// Model and policy governance: approvals, assignments, reviews.
        Governance => "governance",
        /// Administration: users, projects, settings, licences.
        Admin => "admin",
        /// Records about the audit trail itself (retention, legal holds).
        Compliance => "compliance",
        /// The system's own operations: backups, start-up, upgrades.
        System => "system",
    }
);

text_enum!(
    /// How an action ended.
    Outcome, "outcome", {
        /// It did what was asked.
        Success => "success",
        /// It was attempted and failed.
        Failure => "failure",
        /// It was refused by an authorisation decision.
        Denied => "denied",
        /// It was stopped by a safety or policy control.
        Blocked => "blocked",
    }
);

text_enum!(
    /// Who or what acted.
    ActorType, "actor type", {
        /// A person.
        User => "user",
        /// A service account or other non-human caller.
        Service => "service",
        /// An AI agent acting on someone's behalf.
        Agent => "agent",
    }
);

text_enum!(
    /// How a content digest was computed.
    DigestAlgorithm, "digest algorithm", {
        /// HMAC-SHA256 with a secret key named by `key_id`; short values cannot be brute-forced.
        HmacSha256 => "hmac-sha256",
        /// Plain SHA-256; only when chosen explicitly.
        Sha256 => "sha256",
    }
);

text_enum!(
    /// How a value was redacted.
    RedactionMethod, "redaction method", {
        /// Removed entirely.
        Drop => "drop",
        /// Replaced by a mask that keeps a few trailing characters.
        Mask => "mask",
        /// Replaced by a keyed HMAC-SHA256 digest.
        Hmac => "hmac",
        /// Replaced by a plain SHA-256 digest.
        Hash => "hash",
        /// Encrypted into sealed content.
        Encrypt => "encrypt",
        /// Cut to a maximum length.
        Truncate => "truncate",
    }
);

/// The service that produced the event (OpenTelemetry resource attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// `service.name`.
    pub name: String,
    /// `service.version`.
    pub version: Option<String>,
    /// `deployment.environment.name`.
    pub environment: Option<String>,
    /// `host.name`.
    pub host: Option<String>,
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// A stable identifier (user id, service account, agent id).
    pub id: Option<String>,
    /// Person, service or agent.
    #[serde(rename = "type")]
    pub kind: Option<ActorType>,
    /// The role the actor acted in.
    pub role: Option<String>,
    /// The client address the request came from.
    pub ip: Option<String>,
    /// The session the action belongs to.
    pub session: Option<String>,
}

/// What was acted on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The kind of object (`project`, `user`, `model`, `document`, ...).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Its identifier.
    pub id: Option<String>,
}

/// Why an action failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    /// The error's type (`error.type` in OpenTelemetry).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// A message, already redacted.
    pub message: Option<String>,
}

/// OpenTelemetry GenAI semantic-convention fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GenAi {
    /// `gen_ai.provider.name`.
    pub provider: Option<String>,
    /// `gen_ai.operation.name`.
    pub operation: Option<String>,
    /// `gen_ai.request.model`.
    pub request_model: Option<String>,
    /// `gen_ai.response.model`.
    pub response_model: Option<String>,
    /// `gen_ai.usage.input_tokens`.
    pub input_tokens: Option<i64>,
    /// `gen_ai.usage.output_tokens`.
    pub output_tokens: Option<i64>,
    /// `gen_ai.conversation.id`.
    pub conversation_id: Option<String>,
    /// `gen_ai.agent.name`.
    pub agent_name: Option<String>,
    /// `gen_ai.tool.name`.
    pub tool_name: Option<String>,
    /// `gen_ai.request.temperature`.
    pub temperature: Option<f64>,
}

/// The verdict of safety checks run on the request or response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Safety {
    /// Whether every check passed; `None` when no check ran.
    pub passed: Option<bool>,
    /// The detectors that triggered.
    pub detectors: Vec<String>,
    /// Why the request was blocked, when it was.
    pub block_reason: Option<String>,
}

/// A digest standing in for content that is not stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentDigest {
    /// The field the content came from (`gen_ai.input.messages`, `arg.prompt`, ...).
    pub field: String,
    /// How the digest was computed.
    pub algorithm: DigestAlgorithm,
    /// The HMAC key's id; `None` for plain SHA-256.
    pub key_id: Option<String>,
    /// The 32-byte digest.
    #[serde(with = "crate::hex32")]
    pub digest: [u8; 32],
}

/// Content kept only in encrypted form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedContent {
    /// The field the content came from.
    pub field: String,
    /// The cipher (`aes-256-gcm`).
    pub algorithm: String,
    /// The id of the key that sealed it.
    pub key_id: String,
    /// The nonce.
    #[serde(with = "crate::hexvec")]
    pub nonce: Vec<u8>,
    /// Ciphertext with its authentication tag.
    #[serde(with = "crate::hexvec")]
    pub ciphertext: Vec<u8>,
}

/// A record that a value was redacted. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    /// The field that was redacted.
    pub field: String,
    /// How.
    pub method: RedactionMethod,
    /// The detector that found it, when a detector did.
    pub detector: Option<String>,
    /// The key used, for `hmac` and `encrypt`.
    pub key_id: Option<String>,
}

/// W3C trace context linking the event to the trace it happened in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TraceContext {
    /// 32 lower-case hex digits.
    pub trace_id: Option<String>,
    /// 16 lower-case hex digits.
    pub span_id: Option<String>,
    /// 16 lower-case hex digits.
    pub parent_span_id: Option<String>,
}

/// One audited action: who did what, with which model, when, and with what result.
///
/// Every field an auditor filters on is typed; only free-form context goes into
/// [`attributes`](Self::attributes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// A UUIDv7, so ids sort by creation time.
    pub event_id: Uuid,
    /// When the action happened (microsecond precision is stored).
    pub time: DateTime<Utc>,
    /// How long it took, in nanoseconds.
    pub duration_ns: Option<i64>,
    /// How serious it is.
    pub severity: Severity,
    /// The tenant the event belongs to; also its partition.
    pub tenant: String,
    /// The producing service.
    pub service: Service,
    /// Who acted.
    pub actor: Actor,
    /// What kind of activity.
    pub category: Category,
    /// The action, as a dotted name (`llm.chat`, `project.delete`).
    pub action: String,
    /// How it ended.
    pub outcome: Outcome,
    /// What was acted on.
    pub target: Target,
    /// Why it failed.
    pub error: ErrorInfo,
    /// GenAI fields.
    pub gen_ai: GenAi,
    /// Safety verdicts.
    pub safety: Safety,
    /// Digests of content that is not stored.
    pub content_digests: Vec<ContentDigest>,
    /// Content kept encrypted.
    pub sealed_content: Vec<SealedContent>,
    /// Trace context.
    pub trace: TraceContext,
    /// Remaining attributes, already redacted.
    pub attributes: BTreeMap<String, String>,
    /// What was redacted, and how.
    pub redactions: Vec<Redaction>,
}

impl AuditEvent {
    /// A new event with a fresh UUIDv7, the current time, `info` severity,
    /// `success` outcome and everything optional left empty.
    ///
    /// ```
    /// use otel_audit_event::{AuditEvent, Category};
    /// let mut event = AuditEvent::new("acme", "billing-api", Category::Admin, "project.delete");
    /// event.target.kind = Some("project".into());
    /// event.target.id = Some("p-42".into());
    /// event.validate().unwrap();
    /// ```
    pub fn new(
        tenant: impl Into<String>,
        service_name: impl Into<String>,
        category: Category,
        action: impl Into<String>,
    ) -> Self {
        AuditEvent {
            event_id: Uuid::now_v7(),
            time: Utc::now(),
            duration_ns: None,
            severity: Severity::Info,
            tenant: tenant.into(),
            service: Service {
                name: service_name.into(),
                ..Service::default()
            },
            actor: Actor::default(),
            category,
            action: action.into(),
            outcome: Outcome::Success,
            target: Target::default(),
            error: ErrorInfo::default(),
            gen_ai: GenAi::default(),
            safety: Safety::default(),
            content_digests: Vec::new(),
            sealed_content: Vec::new(),
            trace: TraceContext::default(),
            attributes: BTreeMap::new(),
            redactions: Vec::new(),
        }
    }
}
