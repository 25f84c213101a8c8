//! What `#[audit]` expansions call. Not a public API: it changes without notice.

use std::cell::{Cell, RefCell};
use std::fmt::{self, Write as _};

use otel_audit_event::redact::{Redacted, RedactedField, Redactor, inline_digest};
use otel_audit_event::{Actor, Category, Outcome, Severity, Target};
use tracing::Span;

use crate::capture::{Place, Record, Str};
use crate::layer;

pub mod num;

pub use otel_audit_event::redact::Method;
pub use tracing;
pub use tracing::Instrument;

/// An argument or field value on its way to the redaction policy. Values
/// that need formatting are formatted into a buffer the thread reuses.
pub enum Text<'a> {
    /// A string: its text, not its `Debug` form.
    Str(&'a str),
    /// Formatted with `Display`.
    Display(&'a dyn fmt::Display),
    /// Formatted with `Debug`.
    Debug(&'a dyn fmt::Debug),
    /// A `Sensitive<T>`'s value: never recorded in clear.
    Sensitive(&'a dyn fmt::Display),
    /// A number: its `Display` text, written without `core::fmt` when a
    /// short form exists (see [`num`]).
    Num(num::Num),
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
        Text::Sensitive(self.0.expose())
    }
}

/// Strings: their text, not their `Debug` form with quotes and escapes.
pub trait TextStr {
    /// The value's text.
    fn __audit_text(&self) -> Text<'_>;
}
impl<T: AsRef<str> + ?Sized> TextStr for &&Wrap<'_, T> {
    fn __audit_text(&self) -> Text<'_> {
        Text::Str(self.0.as_ref())
    }
}

/// Integers and floats: the same text as `Display`, written without
/// `core::fmt` (a call records numbers as often as strings).
pub trait TextNum {
    /// The value's text.
    fn __audit_text(&self) -> Text<'_>;
}
impl<T: num::Number + ?Sized> TextNum for &&Wrap<'_, T> {
    fn __audit_text(&self) -> Text<'_> {
        Text::Num(self.0.num())
    }
}

/// Types with `Display`.
pub trait TextDisplay {
    /// The value's text.
    fn __audit_text(&self) -> Text<'_>;
}
impl<T: fmt::Display + ?Sized> TextDisplay for &Wrap<'_, T> {
    fn __audit_text(&self) -> Text<'_> {
        Text::Display(&self.0)
    }
}

/// Everything else: `Debug`.
pub trait TextDebug {
    /// The value's text.
    fn __audit_text(&self) -> Text<'_>;
}
impl<T: fmt::Debug + ?Sized> TextDebug for Wrap<'_, T> {
    fn __audit_text(&self) -> Text<'_> {
        Text::Debug(&self.0)
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
/// The values are recorded into this thread's own record (see
/// `Record::hot`), which the span's fields borrow (see
/// [`shown`](Self::shown)); a pooled copy goes to the layer.
pub struct Ctx {
    action: &'static str,
    redactor: layer::RedactorRef,
    record: Box<Record>,
    /// Where `Display` and `Debug` values are formatted (reused per thread).
    scratch: String,
}

thread_local! {
    /// An empty formatting buffer with room, reused by the next `Ctx` on this thread.
    static SCRATCH: Cell<String> = const { Cell::new(String::new()) };
}

/// A recorded value's redacted text, for a span field: see [`Ctx::shown`].
#[derive(Debug, Clone, Copy)]
pub struct Shown(Str);

impl Ctx {
    /// Starts collecting for one call.
    pub fn new(action: &'static str, category: &'static str, severity: &'static str) -> Self {
        // The macro only emits names it checked, so parsing cannot fail.
        let category = category.parse().unwrap_or(Category::System);
        let severity = severity.parse().unwrap_or(Severity::Info);
        let mut record = Record::hot(category, severity);
        record.action = Str::Static(action);
        Ctx {
            action,
            redactor: layer::RedactorRef::current(),
            record,
            scratch: SCRATCH.take(),
        }
    }

    /// The action, for the span field.
    pub fn action(&self) -> &'static str {
        self.action
    }

    /// The redacted text of a recorded value, for its span field.
    pub fn shown(&self, value: Shown) -> &str {
        self.record.get(value.0)
    }

    /// Redacts one value (an explicit method then the policy, the content
    /// method for a `Sensitive<T>`, else the policy) and stores the result.
    fn record_text(
        &mut self,
        name: &'static str,
        text: Text<'_>,
        method: Option<Method>,
        place: Place,
    ) -> Shown {
        let Ctx {
            redactor,
            record,
            scratch,
            ..
        } = self;
        scratch.clear();
        // A formatting error keeps what was written (`to_string` would panic).
        let (text, sensitive, number) = match text {
            Text::Str(s) => (s, false, false),
            Text::Display(d) => {
                let _ = write!(scratch, "{d}");
                (scratch.as_str(), false, false)
            }
            Text::Debug(d) => {
                let _ = write!(scratch, "{d:?}");
                (scratch.as_str(), false, false)
            }
            Text::Sensitive(d) => {
                let _ = write!(scratch, "{d}");
                (scratch.as_str(), true, false)
            }
            Text::Num(n) => {
                n.write(scratch);
                (scratch.as_str(), false, true)
            }
        };
        let r = redactor.get();
        let name_str = Str::Static(name);
        // The method: an explicit one (then the policy on what it leaves),
        // the content method for a `Sensitive<T>`, else the policy's for
        // this name.
        let (method, then_policy, scans) = match (method, sensitive) {
            (Some(m), _) => (Some(m), true, true),
            (None, true) => (Some(r.policy().content_method), true, true),
            (None, false) => {
                let rule = policy_rule(redactor, name);
                (rule.method, false, rule.scans)
            }
        };
        let shown = match method {
            // A digest leaves no text for the policy: what `apply` and
            // `apply_then_policy` return, computed without their owned records.
            Some(Method::Hmac) => match hmac(r, text) {
                Some((key_id, digest)) => record.put_hmac(name_str, key_id, digest, place),
                None => record.put(name_str, r.apply(name, text, &Method::Hmac), place),
            },
            Some(m) if then_policy => {
                record.put(name_str, r.apply_then_policy(name, text, &m), place)
            }
            Some(m) => record.put(name_str, r.apply(name, text, &m), place),
            None => {
                // Most values pass and no detector can match them: stored
                // as they are, without building a result. A number's text
                // needs no pass over its bytes to tell that it is too short
                // to match.
                let may_detect = scans
                    && if number {
                        r.may_detect_number(text)
                    } else {
                        r.may_detect(text)
                    };
                if may_detect {
                    record.put(name_str, r.scan_field(name, text), place)
                } else {
                    record.put_clear(name_str, text, place)
                }
            }
        };
        let shown = Shown(shown);
        if sensitive {
            // Do not leave the clear value in a buffer that outlives the call.
            let n = scratch.len();
            scratch.clear();
            scratch.extend(std::iter::repeat_n('\0', n));
            scratch.clear();
        }
        shown
    }

    /// Records an argument, a `fields(...)` entry or GenAI content; returns
    /// its redacted text for the span.
    pub fn arg(&mut self, name: &'static str, text: Text<'_>, method: Option<Method>) -> Shown {
        self.record_text(name, text, method, Place::Attribute)
    }

    /// Records a GenAI text attribute into its typed column.
    pub fn gen_ai_text(&mut self, key: &'static str, text: Text<'_>) -> Shown {
        self.record_text(key, text, None, Place::GenAi)
    }

    /// Records a GenAI count into its typed column.
    pub fn gen_ai_int(&mut self, key: &'static str, v: Option<i64>) -> Option<i64> {
        if let Some(v) = v {
            self.record.set_gen_ai_int(Str::Static(key), v);
        }
        v
    }

    /// Records the temperature.
    pub fn gen_ai_float(&mut self, key: &'static str, v: f64) -> f64 {
        self.record.set_gen_ai_float(Str::Static(key), v);
        v
    }

    /// Sets the actor (the layer applies the policy's identity rules).
    pub fn actor(&mut self, actor: Actor) {
        self.record.set_actor(&actor);
    }

    /// Sets the target.
    pub fn target(&mut self, target: Target) {
        self.record.set_target(&target);
    }

    /// Hands a copy of the record to the layer, which takes it when the
    /// span is created (right after this): finding the span again
    /// afterwards to attach it costs a registry lookup per call.
    pub fn hand_off(&mut self) {
        let mut record = self.record.copy_out();
        // The span's close reuses this call's reference to the layer (the
        // values are all recorded: the redactor is not needed any more).
        record.layer = self.redactor.take_layer();
        layer::hand_off(record);
    }

    /// After the span is created: a record no layer took (the span is
    /// disabled, or there is no `AuditLayer`) is recycled.
    pub fn settle(self) {
        let Ctx {
            record,
            mut scratch,
            ..
        } = self;
        // The buffers go back for this thread's next call.
        scratch.clear();
        SCRATCH.set(scratch);
        record.cool_down();
        layer::settle();
    }
}

/// The HMAC-SHA256 of `text` under the active key, and that key's id; `None`
/// when there is no HMAC key (the generic path then records the drop).
fn hmac<'r>(r: &'r Redactor, text: &str) -> Option<(&'r str, [u8; 32])> {
    let ring = r.keys().hmac.as_ref()?;
    let id = ring.active_id();
    ring.hmac_sha256(id, text.as_bytes())
        .ok()
        .map(|digest| (id, digest))
}

/// What the policy does with a field name's values.
#[derive(Clone, Copy)]
struct Rule {
    /// Its method (`None`: the value passes, to the detectors).
    method: Option<Method>,
    /// Whether the detectors scan what passes ([`Redactor::scans`]).
    scans: bool,
}

/// (redactor id, name address, name length, the rule).
type RuleEntry = (u64, usize, usize, Rule);

/// Entries in each thread's cache of policy decisions.
const RULES: usize = 64;

const NO_RULE: RuleEntry = (
    u64::MAX,
    0,
    0,
    Rule {
        method: None,
        scans: true,
    },
);

thread_local! {
    /// The policy's rule per (redactor, field name): names in expansions
    /// are `&'static str`, so their address and length identify them, and
    /// a policy never changes once built.
    static RULE_CACHE: RefCell<[RuleEntry; RULES]> = const { RefCell::new([NO_RULE; RULES]) };
}

/// [`Redactor::method_for`] and [`Redactor::scans`], remembered per thread
/// for the names of expansions (looked up on every call otherwise: a hash
/// and every glob of the policy).
fn policy_rule(redactor: &layer::RedactorRef, name: &'static str) -> Rule {
    let id = redactor.id();
    let key = (name.as_ptr() as usize, name.len());
    // Fibonacci hashing of the address, and two slots per name, so the
    // few names of one call site rarely evict each other.
    let h = ((key.0 ^ key.1.rotate_left(48)) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let slot = (h >> 58) as usize % RULES;
    let slots = [slot, slot ^ 1];
    let cached = RULE_CACHE.try_with(|c| {
        let c = c.borrow();
        slots.iter().find_map(|&i| {
            let e = c[i];
            (e.0 == id && (e.1, e.2) == key).then_some(e.3)
        })
    });
    match cached {
        Ok(Some(rule)) => rule,
        _ => {
            let r = redactor.get();
            let rule = Rule {
                method: r.method_for(name),
                scans: r.scans(name),
            };
            let _ = RULE_CACHE.try_with(|c| {
                // The newest in the first slot, the one it displaces in the second.
                let mut c = c.borrow_mut();
                c[slot ^ 1] = c[slot];
                c[slot] = (id, key.0, key.1, rule);
            });
            rule
        }
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
