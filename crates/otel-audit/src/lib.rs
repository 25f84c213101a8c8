//! otel-audit: a tamper-evident audit trail for AI systems, native to
//! OpenTelemetry.
//!
//! An application adds this crate, one [`AuditLayer`] in its tracing
//! subscriber, and [`#[audit]`](audit) on the functions that call models, run
//! tools or change configuration. Each call becomes an [`AuditEvent`]: who
//! did what with which model, when, and with what result. Sensitive values
//! are redacted inside the process, before any layer or exporter sees them:
//! prompts and completions are HMAC'd (equality can be checked later with the
//! key, the text is never stored), and e-mail addresses, card numbers, keys
//! and other detector hits are masked wherever they appear.
//!
//! ```
//! use otel_audit::export::InMemoryExporter;
//! use otel_audit::{AuditLayer, audit};
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! #[audit(
//!     action = "llm.chat",
//!     category = inference,
//!     actor = user,
//!     gen_ai.provider.name = "openai",
//!     gen_ai.request.model = model,
//! )]
//! fn chat(user: &str, model: &str, prompt: &str) -> Result<String, std::io::Error> {
//!     otel_audit::current().input_tokens(12).output_tokens(3);
//!     Ok("Hello!".to_owned())
//! }
//!
//! let exporter = InMemoryExporter::default();
//! let layer = AuditLayer::builder()
//!     .service_name("chat-api")
//!     .hmac_key("hmac-2026-01", [42u8; 32])
//!     .exporter(exporter.clone())
//!     .build()
//!     .unwrap();
//! tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
//!     chat("user-7", "gpt-4o", "What is my balance? My SSN is 078-05-1120").unwrap();
//! });
//! let ev = &exporter.events()[0];
//! assert_eq!(ev.actor.id.as_deref(), Some("user-7"));
//! assert_eq!(ev.gen_ai.output_tokens, Some(3));
//! assert!(!serde_json::to_string(ev).unwrap().contains("078-05-1120"));
//! ```
//!
//! For a new application, [`init`] sets up a subscriber with an OTLP
//! exporter in one call; applications with a subscriber add the layer.

mod capture;
pub mod export;
mod init;
mod layer;
#[doc(hidden)]
pub mod __private {
    pub use crate::private::*;
}
mod private;

pub use init::{AuditGuard, InitError, init};
pub use layer::{
    AuditLayer, AuditLayerBuilder, Current, EmitError, EventBuilder, LayerError, current, event,
    service_from_env,
};
pub use otel_audit_event::redact::{self, Policy, Redactor, Sensitive};
pub use otel_audit_event::{Actor, ActorType, AuditEvent, Category, Outcome, Severity, Target};
pub use otel_audit_macros::audit;

/// Records a point-in-time audit event (see [`event`]) with the same keys as
/// `#[audit]`: `category` and `action` first, then any of `actor`, `target`,
/// `outcome`, `severity`, and `fields(key = value, ...)`.
///
/// ```
/// use otel_audit::{Outcome, audit_event};
/// let user = "admin-1";
/// let r = audit_event!(
///     category = admin,
///     action = "user.create",
///     actor = user,
///     target = ("user", "u-981"),
///     outcome = Outcome::Success,
///     fields(role = "annotator", "team.name" = "claims"),
/// );
/// assert!(r.is_err()); // no AuditLayer installed in this example
/// ```
#[macro_export]
macro_rules! audit_event {
    (category = $cat:ident, action = $action:expr $(, $($rest:tt)*)?) => {
        $crate::__audit_event_build!(
            @ $crate::event($crate::__private::categories::$cat, $action);
            $($($rest)*)?
        )
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __audit_event_build {
    (@ $b:expr ;) => {
        $b.emit()
    };
    (@ $b:expr ; fields($($fk:tt = $fv:expr),* $(,)?) $(, $($rest:tt)*)?) => {
        $crate::__audit_event_build!(
            @ $b $(.field($crate::__audit_key!($fk), $fv))*;
            $($($rest)*)?
        )
    };
    (@ $b:expr ; $key:ident = $val:expr $(, $($rest:tt)*)?) => {
        $crate::__audit_event_build!(@ $b.$key($val); $($($rest)*)?)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __audit_key {
    ($k:ident) => {
        ::core::stringify!($k)
    };
    ($k:literal) => {
        $k
    };
}
