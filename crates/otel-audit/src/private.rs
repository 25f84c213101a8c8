//! What `#[audit]` expansions call. Not a public API: it changes without notice.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use otel_audit_event::redact::{Redacted, RedactedField, inline_digest};
use otel_audit_event::{Actor, Category, Outcome, Severity, Target};
use tracing::Span;

use crate::layer::{self, Pending};

pub use otel_audit_event::redact::Method;
pub use tracing;
pub use tracing::Instrument;

/// An argument or field value on its way to the redaction policy.
pub struct Text<'a> {
    text: Cow<'a, str>,
    /// From a `Sensitive<T>`: never recorded in clear.
    sensitive: bool,
}

/// Wraps a value so the `__audit_text` / `__audit_outcome` methods pick the
/// most specific way to read it (autoref specialisation: the impl with the
/// most references is tried first).
pub struct Wrap<'a, T: ?Sized>(pub &'a T);

/// `Sensitive<T>`: the exposed text, marked sensitive.
pub trait TextSensitive {
    /// The value's text.
    fn __audit_text(&self) -> Text<'_>;
}
impl<T: fmt::Display> TextSensitive for &&&Wrap<'_, otel_audit_event::Sensitive<T>> {
    fn __audit_text(&self) -> Text<'_> {
        Text {
            text: Cow::Owned(self.0.expose().to_string()),
            sensitive: true,
        }
    }
}

/// Strings: their text, not their `Debug` form with quotes and escapes.
pub trait TextStr {
    /// The value's text.
    fn __audit_text(&self) -> Text<'_>;
}
impl<T: AsRef<str> + ?Sized> TextStr for &&Wrap<'_, T> {
    fn __audit_text(&self) -> Text<'_> {
        Text {
            text: Cow::Borrowed(self.0.as_ref()),
            sensitive: false,
        }
    }
}

/// Types with `Display`.
pub trait TextDisplay {
    /// The value's text.
    fn __audit_text(&self) -> Text<'_>;
}
impl<T: fmt::Display + ?Sized> TextDisplay for &Wrap<'_, T> {
    fn __audit_text(&self) -> Text<'_> {
        Text {
            text: Cow::Owned(self.0.to_string()),
            sensitive: false,
        }
    }
}

/// Everything else: `Debug`.
pub trait TextDebug {
    /// The value's text.
    fn __audit_text(&self) -> Text<'_>;
}
impl<T: fmt::Debug + ?Sized> TextDebug for Wrap<'_, T> {
    fn __audit_text(&self) -> Text<'_> {
        Text {
            text: Cow::Owned(format!("{:?}", self.0)),
            sensitive: false,
        }
    }
}

/// How a call ended: the error's type and message for an `Err`.
pub type Failure = Option<(&'static str, String)>;

/// `Result<T, E: Display>`: failure with the error's type and message.
pub trait OutcomeDisplay {
    /// How the call ended.
    fn __audit_outcome(&self) -> Failure;
}
impl<T, E: fmt::Display> OutcomeDisplay for &&Wrap<'_, Result<T, E>> {
    fn __audit_outcome(&self) -> Failure {
        self.0
            .as_ref()
            .err()
            .map(|e| (std::any::type_name::<E>(), e.to_string()))
    }
}

/// `Result<T, E: Debug>`.
pub trait OutcomeDebug {
    /// How the call ended.
    fn __audit_outcome(&self) -> Failure;
}
impl<T, E: fmt::Debug> OutcomeDebug for &Wrap<'_, Result<T, E>> {
    fn __audit_outcome(&self) -> Failure {
        self.0
            .as_ref()
            .err()
            .map(|e| (std::any::type_name::<E>(), format!("{e:?}")))
    }
}

/// A `Result` whose error has neither, or any other return value.
pub trait OutcomeAny {
    /// How the call ended.
    fn __audit_outcome(&self) -> Failure;
}
impl<T: ?Sized> OutcomeAny for Wrap<'_, T> {
    fn __audit_outcome(&self) -> Failure {
        None
    }
}

/// `ret` on a `Result`: the `Ok` value (an `Err` is recorded as the error).
pub trait RetResult {
    /// The text to record, if any.
    fn __audit_ret(&self) -> Option<String>;
}
impl<T: fmt::Debug, E> RetResult for &Wrap<'_, Result<T, E>> {
    fn __audit_ret(&self) -> Option<String> {
        self.0.as_ref().ok().map(|v| format!("{v:?}"))
    }
}

/// `ret` on anything else with `Debug`.
pub trait RetAny {
    /// The text to record.
    fn __audit_ret(&self) -> Option<String>;
}
impl<T: fmt::Debug + ?Sized> RetAny for Wrap<'_, T> {
    fn __audit_ret(&self) -> Option<String> {
        Some(format!("{:?}", self.0))
    }
}

/// Token counts from any integer type, or an `Option` of one (`None`
/// records nothing rather than a count of zero).
pub trait AsI64 {
    /// The value, saturated into `i64`.
    fn as_i64(&self) -> Option<i64>;
}
macro_rules! as_i64 {
    ($($t:ty),*) => {$(
        impl AsI64 for $t {
            fn as_i64(&self) -> Option<i64> {
                Some(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
as_i64!(
    i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize
);
impl<T: AsI64 + ?Sized> AsI64 for &T {
    fn as_i64(&self) -> Option<i64> {
        (**self).as_i64()
    }
}
impl<T: AsI64> AsI64 for Option<T> {
    fn as_i64(&self) -> Option<i64> {
        self.as_ref().and_then(AsI64::as_i64)
    }
}

/// Temperatures from `f32` or `f64`.
pub trait AsF64 {
    /// The value as `f64`.
    fn as_f64(&self) -> f64;
}
impl AsF64 for f64 {
    fn as_f64(&self) -> f64 {
        *self
    }
}
impl AsF64 for f32 {
    fn as_f64(&self) -> f64 {
        f64::from(*self)
    }
}
impl<T: AsF64 + ?Sized> AsF64 for &T {
    fn as_f64(&self) -> f64 {
        (**self).as_f64()
    }
}

/// `actor = ...`: an id or a full [`Actor`].
pub trait IntoActor {
    /// The actor.
    fn into_actor(self) -> Actor;
}
impl IntoActor for Actor {
    fn into_actor(self) -> Actor {
        self
    }
}
impl IntoActor for &Actor {
    fn into_actor(self) -> Actor {
        self.clone()
    }
}
impl IntoActor for &str {
    fn into_actor(self) -> Actor {
        Actor {
            id: Some(self.to_owned()),
            ..Actor::default()
        }
    }
}
impl IntoActor for String {
    fn into_actor(self) -> Actor {
        Actor {
            id: Some(self),
            ..Actor::default()
        }
    }
}
impl IntoActor for &String {
    fn into_actor(self) -> Actor {
        self.as_str().into_actor()
    }
}

/// `target = ...`: `(type, id)` or a full [`Target`].
pub trait IntoTarget {
    /// The target.
    fn into_target(self) -> Target;
}
impl IntoTarget for Target {
    fn into_target(self) -> Target {
        self
    }
}
impl IntoTarget for &Target {
    fn into_target(self) -> Target {
        self.clone()
    }
}
impl<K: fmt::Display, I: fmt::Display> IntoTarget for (K, I) {
    fn into_target(self) -> Target {
        Target {
            kind: Some(self.0.to_string()),
            id: Some(self.1.to_string()),
        }
    }
}

/// What an expansion collects before its span exists: every value redacted
/// with the policy of the `AuditLayer` in the current subscriber (or, with
/// none, a fail-closed default), so the span only ever holds redacted text.
///
/// The redacted texts stay here while the span is created (its fields borrow
/// them through [`shown`](Self::shown)) and then move into the event, so
/// each value is copied once.
pub struct Ctx {
    action: &'static str,
    redactor: layer::RedactorRef,
    pending: Box<Pending>,
    texts: Vec<(Dest, String)>,
}

thread_local! {
    /// An empty text list with room, reused by the next `Ctx` on this thread.
    static TEXTS: Cell<Vec<(Dest, String)>> = const { Cell::new(Vec::new()) };
}

/// A recorded value's redacted text, for a span field: see [`Ctx::shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown(usize);

/// Where a recorded text goes once the span exists.
enum Dest {
    /// The event's attribute of that name.
    Attribute(&'static str),
    /// A typed GenAI column (or attribute) of that name.
    GenAi(&'static str),
    /// Only the span: the event holds a digest or sealed content instead.
    Span,
}

impl Ctx {
    /// Starts collecting for one call that records up to `values` texts.
    pub fn new(
        action: &'static str,
        category: &'static str,
        severity: &'static str,
        values: usize,
    ) -> Self {
        // The macro only emits names it checked, so parsing cannot fail.
        let category = category.parse().unwrap_or(Category::System);
        let severity = severity.parse().unwrap_or(Severity::Info);
        let mut texts = TEXTS.take();
        texts.reserve(values);
        Ctx {
            action,
            redactor: layer::RedactorRef::current(),
            pending: Box::new(Pending::new(action, category, severity)),
            texts,
        }
    }

    /// The action, for the span field.
    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The redacted text of a recorded value, for its span field.
    pub fn shown(&self, value: Shown) -> &str {
        &self.texts[value.0].1
    }

    fn keep(&mut self, dest: Dest, text: String) -> Shown {
        self.texts.push((dest, text));
        Shown(self.texts.len() - 1)
    }

    /// The redaction of one value: an explicit method (then the policy),
    /// the content method for a `Sensitive<T>`, else the policy.
    fn redact<'t>(
        &self,
        name: &str,
        text: &'t str,
        sensitive: bool,
        method: Option<Method>,
    ) -> RedactedField<'t> {
        let r = self.redactor.get();
        match (method, sensitive) {
            (Some(m), _) => r.apply_then_policy(name, text, &m),
            (None, true) => r.apply_then_policy(name, text, &r.policy().content_method),
            (None, false) => r.redact_field(name, text),
        }
    }

    /// Records an argument, a `fields(...)` entry or GenAI content; returns
    /// its redacted text for the span.
    pub fn arg(&mut self, name: &'static str, text: Text<'_>, method: Option<Method>) -> Shown {
        let Text { text, sensitive } = text;
        let out = self.redact(name, &text, sensitive, method);
        let (shown, attribute) = if out.is_clear() && matches!(text, Cow::Owned(_)) {
            // Unchanged text formatted for this call: keep that String, no copy.
            let RedactedField { value, redactions } = out;
            drop(value);
            self.pending.keep_redactions(redactions);
            (text.into_owned(), true)
        } else {
            self.pending.place(name, out)
        };
        let dest = if attribute {
            Dest::Attribute(name)
        } else {
            Dest::Span
        };
        self.keep(dest, shown)
    }

    /// Records a GenAI text attribute into its typed column.
    pub fn gen_ai_text(&mut self, key: &'static str, text: Text<'_>) -> Shown {
        let out = self.redact(key, &text.text, text.sensitive, None);
        let shown = shown_text(&out);
        self.pending.redactions_from(out);
        self.keep(Dest::GenAi(key), shown)
    }

    /// Records a GenAI count into its typed column.
    pub fn gen_ai_int(&mut self, key: &'static str, v: Option<i64>) -> Option<i64> {
        if let Some(v) = v {
            self.pending.set_gen_ai_int(key, v);
        }
        v
    }

    /// Records the temperature.
    pub fn gen_ai_float(&mut self, key: &'static str, v: f64) -> f64 {
        self.pending.set_gen_ai_float(key, v);
        v
    }

    /// Sets the actor (the layer applies the policy's identity rules).
    pub fn actor(&mut self, actor: Actor) {
        self.pending.set_actor(actor);
    }

    /// Sets the target.
    pub fn target(&mut self, target: Target) {
        self.pending.set_target(target);
    }

    /// Hands everything collected to the span's audit state.
    pub fn attach(self, span: &Span) {
        let Ctx {
            mut pending,
            mut texts,
            ..
        } = self;
        for (dest, text) in texts.drain(..) {
            match dest {
                Dest::Attribute(name) => pending.insert_attribute(name, text),
                Dest::GenAi(key) => pending.set_gen_ai_text(key, text),
                Dest::Span => {}
            }
        }
        // The emptied list goes back for this thread's next call.
        TEXTS.set(texts);
        layer::attach(span, pending);
    }
}

/// The text a span field may show for a redaction result.
pub(crate) fn shown_text(r: &RedactedField<'_>) -> String {
    match &r.value {
        Redacted::Clear(s) => s.to_string(),
        Redacted::Replaced(s) => s.clone(),
        Redacted::Dropped => "[dropped]".to_owned(),
        Redacted::Digest(d) => inline_digest(d),
        Redacted::Sealed(s) => format!("[encrypted:{}:{}]", s.algorithm, s.key_id),
    }
}

/// Records how the call ended on the span's audit state and on the span.
pub fn finish(span: &Span, failure: Failure, ret: Option<String>, err: bool) {
    let outcome = if failure.is_some() {
        Outcome::Failure
    } else {
        Outcome::Success
    };
    span.record("otel_audit.outcome", outcome.as_str());
    let message = layer::finish(span, failure, ret, err);
    if let Some(message) = message {
        let _entered = span.enter();
        tracing::error!(target: "otel_audit", error = %message, "audited call failed");
    }
}

/// `category = admin` in `audit_event!`: a misspelt category is a
/// compile error ("cannot find value"), as in `#[audit]`.
#[allow(non_upper_case_globals)]
pub mod categories {
    use otel_audit_event::Category;

    /// `inference`.
    pub const inference: Category = Category::Inference;
    /// `tool`.
    pub const tool: Category = Category::Tool;
    /// `data_access`.
    pub const data_access: Category = Category::DataAccess;
    /// `security`.
    pub const security: Category = Category::Security;
    /// `governance`.
    pub const governance: Category = Category::Governance;
    /// `admin`.
    pub const admin: Category = Category::Admin;
    /// `compliance`.
    pub const compliance: Category = Category::Compliance;
    /// `system`.
    pub const system: Category = Category::System;
}
