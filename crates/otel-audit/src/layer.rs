//! The `AuditLayer`: turns `#[audit]` spans into audit events when they close.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use otel_audit_event::redact::{Keyring, Keys, Policy, PolicyError, Redactor};
use otel_audit_event::{Category, Outcome, Service, Severity};
use tracing::span::{Attributes, Id};
use tracing::{Span, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::capture::{Envelope, Ids, Place, Record, Str};
use crate::export::{AuditExporter, CapturedEvent};
use crate::private::shown_text;

/// A tracing-subscriber layer that builds an [`AuditEvent`](crate::AuditEvent) for every
/// `#[audit]` span when it closes and hands it to an exporter, without
/// blocking the calling thread on I/O. Other spans and events are ignored.
///
/// ```
/// use otel_audit::export::InMemoryExporter;
/// use otel_audit::AuditLayer;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let exporter = InMemoryExporter::default();
/// let layer = AuditLayer::builder()
///     .service_name("claims-api")
///     .tenant("acme")
///     .hmac_key("hmac-2026-01", [7u8; 32])
///     .exporter(exporter.clone())
///     .build()
///     .unwrap();
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || {
///     #[otel_audit::audit(action = "llm.chat", gen_ai.request.model = "gpt-4o")]
///     fn chat(prompt: &str) -> Result<String, std::io::Error> {
///         Ok(format!("echo {}", prompt.len()))
///     }
///     chat("my card is 4111 1111 1111 1111").unwrap();
/// });
/// let events = exporter.events();
/// assert_eq!(events[0].action, "llm.chat");
/// assert_eq!(events[0].gen_ai.request_model.as_deref(), Some("gpt-4o"));
/// assert_eq!(events[0].content_digests[0].field, "prompt"); // HMAC'd, not stored
/// ```
#[derive(Clone)]
pub struct AuditLayer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// Tells this layer's redactor apart from any other, for caches of its
    /// decisions (never 0: that is the fallback redactor's).
    pub(crate) id: u64,
    pub(crate) redactor: Redactor,
    exporter: Arc<dyn AuditExporter>,
    pub(crate) service: Service,
    pub(crate) tenant: String,
}

/// Builds an [`AuditLayer`].
#[must_use]
pub struct AuditLayerBuilder {
    redactor: Option<Redactor>,
    hmac_key: Option<(String, Vec<u8>)>,
    encryption_key: Option<(String, Vec<u8>)>,
    exporter: Option<Arc<dyn AuditExporter>>,
    service: Service,
    tenant: String,
}

/// Why an [`AuditLayer`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// No exporter was given.
    #[error("AuditLayer needs an exporter: call .exporter(...)")]
    NoExporter,
    /// The HMAC key or policy was refused.
    #[error("invalid redaction set-up")]
    Policy(#[from] otel_audit_event::redact::PolicyError),
    /// `OTEL_AUDIT_HMAC_KEY` is not hex.
    #[error("OTEL_AUDIT_HMAC_KEY must be hex digits (at least 64 for a 32-byte key)")]
    KeyEnv,
    /// No key was configured and the OS gave no randomness for a
    /// per-process one.
    #[error("no HMAC key configured and no OS randomness for an ephemeral one")]
    Random(#[source] getrandom::Error),
}

impl AuditLayer {
    /// Starts a builder. Service name, version and environment default to the
    /// standard `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` variables.
    pub fn builder() -> AuditLayerBuilder {
        AuditLayerBuilder {
            redactor: None,
            hmac_key: None,
            encryption_key: None,
            exporter: None,
            service: service_from_env(),
            tenant: "default".to_owned(),
        }
    }

    /// The redactor this layer applies (the same one `#[audit]` uses).
    pub fn redactor(&self) -> &Redactor {
        &self.inner.redactor
    }

    /// The exporter events go to.
    pub fn exporter(&self) -> &Arc<dyn AuditExporter> {
        &self.inner.exporter
    }
}

impl AuditLayerBuilder {
    /// Where events go.
    pub fn exporter(mut self, exporter: impl AuditExporter) -> Self {
        self.exporter = Some(Arc::new(exporter));
        self
    }

    /// Where events go, shared.
    pub fn shared_exporter(mut self, exporter: Arc<dyn AuditExporter>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// A full redaction set-up (policy and keys), e.g. from
    /// `Redactor::from_policy(Policy::from_yaml_file(..)?)`.
    pub fn redactor(mut self, redactor: Redactor) -> Self {
        self.redactor = Some(redactor);
        self
    }

    /// The default policy with this HMAC key (at least 32 bytes). Without a
    /// key or redactor, `OTEL_AUDIT_HMAC_KEY` (hex) and
    /// `OTEL_AUDIT_HMAC_KEY_ID` are used; without those, a random key for
    /// this process only (digests cannot be recomputed later).
    pub fn hmac_key(mut self, key_id: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        self.hmac_key = Some((key_id.into(), key.into()));
        self
    }

    /// The AES-256-GCM key (32 bytes) for `redact(arg = "encrypt")`, with
    /// the default policy. Without one, `encrypt` drops the value (fail closed).
    pub fn encryption_key(mut self, key_id: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        self.encryption_key = Some((key_id.into(), key.into()));
        self
    }

    /// `service.name`.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service.name = name.into();
        self
    }

    /// `service.version`.
    pub fn service_version(mut self, version: impl Into<String>) -> Self {
        self.service.version = Some(version.into());
        self
    }

    /// `deployment.environment.name`.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.service.environment = Some(environment.into());
        self
    }

    /// The tenant events belong to (a collector with authentication takes it
    /// from the token instead).
    pub fn tenant(mut self, tenant: impl Into<String>) -> Self {
        self.tenant = tenant.into();
        self
    }

    /// Builds the layer.
    pub fn build(self) -> Result<AuditLayer, LayerError> {
        let exporter = self.exporter.ok_or(LayerError::NoExporter)?;
        let redactor = match self.redactor {
            Some(r) => r,
            None => {
                let (id, key) = match self.hmac_key {
                    Some(k) => k,
                    None => match std::env::var("OTEL_AUDIT_HMAC_KEY") {
                        Ok(hex_key) => (
                            std::env::var("OTEL_AUDIT_HMAC_KEY_ID")
                                .unwrap_or_else(|_| "hmac-env".to_owned()),
                            hex::decode(hex_key.trim()).map_err(|_| LayerError::KeyEnv)?,
                        ),
                        Err(_) => (
                            EPHEMERAL_KEY_ID.to_owned(),
                            ephemeral_key().map_err(LayerError::Random)?.to_vec(),
                        ),
                    },
                };
                let key_error = |path: &str| {
                    let path = path.to_owned();
                    move |source| PolicyError::Key { path, source }
                };
                let mut keys = Keys::hmac(Keyring::hmac(id, key).map_err(key_error("keys.hmac"))?);
                if let Some((id, key)) = self.encryption_key {
                    keys = keys.with_encryption(
                        Keyring::encryption(id, key).map_err(key_error("keys.encryption"))?,
                    );
                }
                Redactor::new(Policy::default(), keys)?
            }
        };
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(AuditLayer {
            inner: Arc::new(Inner {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                redactor,
                exporter,
                service: self.service,
                tenant: self.tenant,
            }),
        })
    }
}

/// The service as OpenTelemetry SDKs read it from the environment:
/// `OTEL_SERVICE_NAME`, then `OTEL_RESOURCE_ATTRIBUTES` (`service.name`,
/// `service.version`, `deployment.environment[.name]`, `host.name`), the
/// program's name when no name is set, and `HOSTNAME` or `/etc/hostname` for
/// the host. What the layer stamps on every event unless the builder says
/// otherwise.
pub fn service_from_env() -> Service {
    let mut s = Service::default();
    if let Ok(attrs) = std::env::var("OTEL_RESOURCE_ATTRIBUTES") {
        for kv in attrs.split(',') {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let v = v.trim().to_owned();
            match k.trim() {
                "service.name" => s.name = v,
                "service.version" => s.version = Some(v),
                "deployment.environment.name" | "deployment.environment" => s.environment = Some(v),
                "host.name" => s.host = Some(v),
                _ => {}
            }
        }
    }
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME") {
        s.name = name;
    }
    if s.name.is_empty() {
        s.name = std::env::args()
            .next()
            .and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "unknown_service".to_owned());
    }
    if s.host.is_none() {
        s.host = std::env::var("HOSTNAME").ok().or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        });
    }
    s
}

const EPHEMERAL_KEY_ID: &str = "ephemeral";

/// A key that lives only as long as this process: nothing leaks in clear,
/// but digests cannot be recomputed afterwards. Only from the OS: a key
/// derived from anything guessable would let short values be brute-forced.
fn ephemeral_key() -> Result<[u8; 32], getrandom::Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(key)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new({
        // Ids need uniqueness, not secrecy: without OS randomness the clock
        // and this thread's stack address still tell threads and runs apart.
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let here = &seed as *const _ as u64;
            seed = (now ^ here.rotate_left(32)).to_le_bytes();
        }
        u64::from_le_bytes(seed)
    });
}

/// SplitMix64: trace and span ids need uniqueness, not secrecy, and must be cheap.
fn next_u64() -> u64 {
    RNG.with(|s| {
        let mut x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    })
}

/// A random non-zero id word (trace ids are two, span ids one).
fn id_word() -> u64 {
    loop {
        let w = next_u64();
        if w != 0 {
            return w;
        }
    }
}

/// The active OpenTelemetry span (an application traced with the
/// OpenTelemetry API): a root audit span joins its trace, so audit events
/// and traces can be correlated.
fn otel_parent() -> Option<([u64; 2], u64)> {
    use opentelemetry::trace::TraceContextExt;
    opentelemetry::Context::map_current(|cx| {
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            let t = sc.trace_id().to_bytes();
            let (hi, lo) = t.split_at(8);
            let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
            (
                [word(hi), word(lo)],
                u64::from_be_bytes(sc.span_id().to_bytes()),
            )
        })
    })
}

/// The redactor `#[audit]` uses: the current subscriber's `AuditLayer`'s, or
/// a fail-closed default when there is none.
pub(crate) enum RedactorRef {
    Layer(Arc<Inner>),
    Fallback(&'static Redactor),
    /// The layer's reference went to the record (see [`take_layer`](Self::take_layer)).
    HandedOff,
}

impl RedactorRef {
    pub(crate) fn current() -> Self {
        let inner = tracing::dispatcher::get_default(|d| {
            d.downcast_ref::<AuditLayer>().map(|l| l.inner.clone())
        });
        match inner {
            Some(i) => RedactorRef::Layer(i),
            None => RedactorRef::Fallback(fallback_redactor()),
        }
    }

    /// Which redactor this is (see `Inner::id`).
    pub(crate) fn id(&self) -> u64 {
        match self {
            RedactorRef::Layer(i) => i.id,
            RedactorRef::Fallback(_) | RedactorRef::HandedOff => 0,
        }
    }

    pub(crate) fn get(&self) -> &Redactor {
        match self {
            RedactorRef::Layer(i) => &i.redactor,
            RedactorRef::Fallback(r) => r,
            // Not used after the hand-off; fail closed if it ever were.
            RedactorRef::HandedOff => fallback_redactor(),
        }
    }

    /// The layer's reference, for the record the call hands to its span;
    /// this one is not used afterwards.
    pub(crate) fn take_layer(&mut self) -> Option<Arc<Inner>> {
        match std::mem::replace(self, RedactorRef::HandedOff) {
            RedactorRef::Layer(i) => Some(i),
            other => {
                *self = other;
                None
            }
        }
    }
}

fn fallback_redactor() -> &'static Redactor {
    static FALLBACK: OnceLock<Redactor> = OnceLock::new();
    FALLBACK.get_or_init(|| {
        let key = ephemeral_key().expect("OS randomness for the fallback redaction key");
        Redactor::default_with_key(EPHEMERAL_KEY_ID, &key)
            .expect("the default policy with a 32-byte key is valid")
    })
}

/// Per-span state, private to this layer (in the span's extensions).
struct AuditSpan {
    /// A calendar time only at assembly (chrono's conversion is not free).
    started_at: SystemTime,
    started: Instant,
    ids: Ids,
    /// What the call captured (boxed: it moves from the call to the span
    /// and on to the exporter by pointer).
    record: Option<Box<Record>>,
}

/// Runs `f` on the audit state of `id` or its nearest audit ancestor.
fn with_state<R>(id: &Id, f: impl FnOnce(&Inner, &mut AuditSpan) -> R) -> Option<R> {
    // get_default takes an FnMut; the FnOnce runs at most once.
    let mut f = Some(f);
    tracing::dispatcher::get_default(|d| {
        let inner = &d.downcast_ref::<AuditLayer>()?.inner;
        let registry = d.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        for s in span.scope() {
            let mut ext = s.extensions_mut();
            if let Some(state) = ext.get_mut::<AuditSpan>() {
                return f.take().map(|f| f(inner, state));
            }
        }
        None
    })
}

thread_local! {
    /// The record of the audit span this thread is about to create: the
    /// expansion leaves it here and the layer's `on_new_span` takes it.
    static PENDING: Cell<Option<Box<Record>>> = const { Cell::new(None) };
}

/// Leaves an expansion's record for the audit span it creates next.
pub(crate) fn hand_off(record: Box<Record>) {
    if let Ok(Some(stale)) = PENDING.try_with(|p| p.replace(Some(record))) {
        // Only if a span was never created after a hand-off (a panic in
        // between): that record belongs to no span.
        stale.release();
    }
}

/// After the span is created: the record is recycled if no layer took it
/// (no `AuditLayer`, or the span is disabled), so it cannot reach another span.
pub(crate) fn settle() {
    if let Ok(Some(record)) = PENDING.try_with(Cell::take) {
        record.release();
    }
}

/// Records how an audited call ended. Returns the redacted error message
/// when `err` asks for an error event.
pub(crate) fn finish(
    span: &Span,
    failure: Option<(&'static str, String)>,
    ret: Option<String>,
    err: bool,
) -> Option<String> {
    // A plain success leaves nothing to record: the outcome is already
    // success, or what the call set itself.
    if failure.is_none() && ret.is_none() {
        return None;
    }
    let id = span.id()?;
    with_state(&id, |inner, state| {
        let p = state.record.as_mut()?;
        if let Some(ret) = ret {
            let r = inner.redactor.redact_field("return", &ret);
            p.put(Str::Static("return"), r, Place::Attribute);
        }
        let (kind, message) = failure?;
        let r = inner.redactor.redact_field("error.message", &message);
        let shown = shown_text(&r);
        // An outcome the call set itself (denied, blocked) says more than "failure".
        if p.outcome == Outcome::Success {
            p.outcome = Outcome::Failure;
        }
        p.set_error(kind, r.text());
        if err && p.severity < Severity::Error {
            p.severity = Severity::Error;
        }
        p.keep_redactions(Str::Static("error.message"), &r.redactions);
        err.then_some(shown)
    })
    .flatten()
}

impl<S> Layer<S> for AuditLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if meta.target() != "otel_audit" || meta.fields().field("otel_audit.action").is_none() {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        // Nested audit spans share the trace of the nearest audit ancestor.
        let parent = span.parent().and_then(|p| {
            p.scope().find_map(|s| {
                s.extensions()
                    .get::<AuditSpan>()
                    .map(|a| (a.ids.trace, a.ids.span))
            })
        });
        let (trace, parent) = match parent.or_else(otel_parent) {
            Some((t, s)) => (t, Some(s)),
            None => ([id_word(), id_word()], None),
        };
        // An `#[audit]` expansion handed its record over just before
        // creating this span; a span made with `tracing::span!` by hand has none.
        let record = PENDING.try_with(Cell::take).ok().flatten();
        span.extensions_mut().insert(AuditSpan {
            started_at: SystemTime::now(),
            started: Instant::now(),
            ids: Ids {
                trace,
                span: id_word(),
                parent,
            },
            record,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(state) = span.extensions_mut().remove::<AuditSpan>() else {
            return;
        };
        let Some(mut record) = state.record else {
            return;
        };
        let duration = state.started.elapsed();
        // The reference the call took to read the policy comes with the
        // record: counting another (and the call dropping its own) would be
        // two more atomic writes to a count the exporter's thread writes
        // too, each a cache-line transfer between cores.
        let layer = match record.layer.take() {
            Some(layer) if Arc::ptr_eq(&layer, &self.inner) => layer,
            _ => Arc::clone(&self.inner),
        };
        record.envelope = Some(Envelope {
            layer,
            time: state.started_at,
            duration_ns: Some(i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)),
            trace: Some(state.ids),
        });
        // The event is assembled (and the identity fields redacted) by the
        // exporter, on its own thread when it has one.
        self.inner.exporter.export_captured(CapturedEvent(record));
    }
}

/// The audit span the current code runs in, to record what is only known
/// inside the call: token counts, the response model, a safety verdict.
///
/// Calls outside any `#[audit]` span (or without an `AuditLayer`) do nothing.
///
/// ```
/// #[otel_audit::audit(action = "llm.chat", category = inference)]
/// fn chat(prompt: &str) -> String {
///     let completion = "Hello".to_owned();
///     otel_audit::current()
///         .response_model("gpt-4o-2025-08-01")
///         .input_tokens(12)
///         .output_tokens(3);
///     completion
/// }
/// # chat("hi");
/// ```
pub fn current() -> Current {
    Current(Span::current().id())
}

/// Handle returned by [`current`].
#[derive(Debug, Clone)]
pub struct Current(Option<Id>);

impl Current {
    fn update(&self, f: impl FnOnce(&Inner, &mut Record)) -> &Self {
        if let Some(id) = &self.0 {
            with_state(id, |inner, state| {
                if let Some(p) = state.record.as_mut() {
                    f(inner, p);
                }
            });
        }
        self
    }

    /// Whether the code runs inside an audit span of an `AuditLayer`.
    pub fn is_audited(&self) -> bool {
        self.0
            .as_ref()
            .and_then(|id| with_state(id, |_, s| s.record.is_some()))
            .unwrap_or(false)
    }

    /// Sets the outcome (a returned `Err` still sets `failure` afterwards).
    pub fn outcome(&self, outcome: Outcome) -> &Self {
        self.update(|_, p| p.outcome = outcome)
    }

    /// Records a passed safety check.
    pub fn safety_passed(&self) -> &Self {
        self.update(|_, p| p.safety_passed = Some(true))
    }

    /// Records a blocked request: failed safety check, the detectors that
    /// fired and the reason (scanned by the detectors); outcome `blocked`.
    pub fn blocked<D: Into<String>>(
        &self,
        detectors: impl IntoIterator<Item = D>,
        reason: &str,
    ) -> &Self {
        let detectors: Vec<String> = detectors.into_iter().map(Into::into).collect();
        self.update(|inner, p| {
            let r = inner.redactor.redact_field("safety.block_reason", reason);
            p.safety_passed = Some(false);
            p.set_blocked(&detectors, r.text());
            p.outcome = Outcome::Blocked;
            p.keep_redactions(Str::Static("safety.block_reason"), &r.redactions);
        })
    }

    /// `gen_ai.usage.input_tokens`.
    pub fn input_tokens(&self, n: i64) -> &Self {
        self.update(|_, p| p.input_tokens = Some(n))
    }

    /// `gen_ai.usage.output_tokens`.
    pub fn output_tokens(&self, n: i64) -> &Self {
        self.update(|_, p| p.output_tokens = Some(n))
    }

    /// `gen_ai.response.model`.
    pub fn response_model(&self, model: &str) -> &Self {
        self.text("gen_ai.response.model", model)
    }

    /// Any GenAI text attribute by its OpenTelemetry name, through the policy.
    pub fn text(&self, key: &str, value: &str) -> &Self {
        self.update(|inner, p| {
            let r = inner.redactor.redact_field(key, value);
            let key = p.text(key);
            p.put(key, r, Place::GenAi);
        })
    }

    /// An attribute, through the policy (content names are HMAC'd, every
    /// text is scanned by the detectors).
    pub fn field(&self, key: &str, value: &str) -> &Self {
        self.update(|inner, p| {
            let r = inner.redactor.redact_field(key, value);
            let key = p.text(key);
            p.put(key, r, Place::Attribute);
        })
    }

    /// Content that must never be stored in clear (a completion, tool
    /// output): the policy's content method, HMAC by default.
    pub fn content(&self, key: &str, value: &str) -> &Self {
        self.update(|inner, p| {
            let m = inner.redactor.policy().content_method;
            let r = inner.redactor.apply_then_policy(key, value, &m);
            let key = p.text(key);
            p.put(key, r, Place::Attribute);
        })
    }

    /// Sets the actor.
    pub fn actor(&self, actor: impl crate::private::IntoActor) -> &Self {
        let a = actor.into_actor();
        self.update(|_, p| p.set_actor(&a))
    }

    /// Sets the target.
    pub fn target(&self, target: impl crate::private::IntoTarget) -> &Self {
        let t = target.into_target();
        self.update(|_, p| p.set_target(&t))
    }
}

/// A point-in-time audit event (user created, project deleted, backup run):
/// no span, no duration. Build with [`event`], send with [`EventBuilder::emit`].
#[must_use = "an audit event is only recorded by .emit()"]
pub struct EventBuilder {
    record: Box<Record>,
    fields: Vec<(String, String, bool)>,
}

/// Why [`EventBuilder::emit`] did not record an event.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The current subscriber has no `AuditLayer`: the event would be lost.
    #[error(
        "no AuditLayer in the current tracing subscriber: audit event {action:?} was not recorded"
    )]
    NoLayer {
        /// The event's action.
        action: String,
    },
}

/// Starts a point-in-time audit event.
///
/// ```
/// use otel_audit::{Category, Outcome};
/// let result = otel_audit::event(Category::Admin, "project.delete")
///     .actor("user-17")
///     .target(("project", "p-42"))
///     .field("reason", "retention expired")
///     .outcome(Outcome::Success)
///     .emit();
/// // Without an AuditLayer installed, nothing is silently lost:
/// assert!(result.is_err());
/// ```
pub fn event(category: Category, action: &str) -> EventBuilder {
    let mut record = Record::take(category, Severity::Info);
    record.action = record.text(action);
    EventBuilder {
        record,
        fields: Vec::new(),
    }
}

impl EventBuilder {
    /// Who acted.
    pub fn actor(mut self, actor: impl crate::private::IntoActor) -> Self {
        self.record.set_actor(&actor.into_actor());
        self
    }

    /// What was acted on.
    pub fn target(mut self, target: impl crate::private::IntoTarget) -> Self {
        self.record.set_target(&target.into_target());
        self
    }

    /// The outcome (default success).
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.record.outcome = outcome;
        self
    }

    /// The severity (default info).
    pub fn severity(mut self, severity: Severity) -> Self {
        self.record.severity = severity;
        self
    }

    /// An attribute, through the policy when emitted.
    pub fn field(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.fields.push((key.into(), value.to_string(), false));
        self
    }

    /// Content never stored in clear (the policy's content method).
    pub fn content(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.fields.push((key.into(), value.to_string(), true));
        self
    }

    /// Redacts, stamps and hands the event to the current `AuditLayer`.
    pub fn emit(self) -> Result<(), EmitError> {
        let EventBuilder { mut record, fields } = self;
        let Some(inner) = tracing::dispatcher::get_default(|d| {
            d.downcast_ref::<AuditLayer>().map(|l| l.inner.clone())
        }) else {
            let action = record.get(record.action).to_owned();
            Record::recycle(&mut vec![record]);
            return Err(EmitError::NoLayer { action });
        };
        for (k, v, content) in fields {
            let r = if content {
                let m = inner.redactor.policy().content_method;
                inner.redactor.apply_then_policy(&k, &v, &m)
            } else {
                inner.redactor.redact_field(&k, &v)
            };
            let key = record.text(&k);
            record.put(key, r, Place::Attribute);
        }
        // Inside an audit span, the event belongs to its trace.
        let ids = Span::current()
            .id()
            .and_then(|id| with_state(&id, |_, s| s.ids));
        record.envelope = Some(Envelope {
            layer: Arc::clone(&inner),
            time: SystemTime::now(),
            duration_ns: None,
            trace: ids.map(|ids| Ids {
                trace: ids.trace,
                span: id_word(),
                parent: Some(ids.span),
            }),
        });
        inner.exporter.export_captured(CapturedEvent(record));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use otel_audit_event::RedactionMethod;
    use otel_audit_event::redact::{Method, Redacted};

    use super::*;

    fn redactor(policy: Policy) -> Redactor {
        Redactor::new(policy, Keys::hmac(Keyring::hmac("k1", [3u8; 32]).unwrap())).unwrap()
    }

    #[test]
    fn an_explicit_method_still_gets_the_policy() {
        // Default policy: a truncated prompt is still content, so HMAC'd.
        let r = redactor(Policy::default());
        let out = r.apply_then_policy(
            "prompt",
            "tell me a story",
            &Method::Truncate { max_chars: 4 },
        );
        assert!(matches!(out.value, Redacted::Digest(_)), "{out:?}");
        let methods: Vec<_> = out.redactions.iter().map(|x| x.method).collect();
        assert_eq!(methods, [RedactionMethod::Truncate, RedactionMethod::Hmac]);
        // Allowlist: a masked value of a name not allowed fails closed.
        let r = redactor(Policy::allowlist(["http.route"]));
        let out = r.apply_then_policy("card", "4111", &Method::MASK);
        assert!(matches!(out.value, Redacted::Digest(_)), "{out:?}");
        // Text the policy lets pass is left as the method made it.
        let r = redactor(Policy::default());
        let out = r.apply_then_policy("note", "abcdef", &Method::MASK);
        assert_eq!(out.text(), Some("***def")); // MASK keeps at most half
        assert_eq!(out.redactions.len(), 1);
    }
}
