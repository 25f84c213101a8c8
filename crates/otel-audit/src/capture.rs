//! What an audited call captures on its own thread, and how that becomes an
//! [`AuditEvent`] on the exporter's.
//!
//! The calling thread only redacts (which must happen there, before any
//! layer sees a value) and copies the redacted texts into one buffer of a
//! [`Record`], with a list of small [`Op`]s saying where each text goes. The
//! event itself, with its map, strings and lists, is assembled by
//! [`Record::assemble`], which queued exporters run on their own thread.
//!
//! Why: on the calling thread every allocation that another thread frees is
//! expensive (the allocator's arena lock is shared with the thread freeing
//! into it), and an assembled event is two dozen of them. Records are
//! recycled through a small pool instead, so in steady state an audited call
//! allocates nothing that crosses threads.

// The pool holds boxes on purpose: a record moves from the call into its
// span and on to the exporter as one pointer, and comes back in the same box.
#![allow(clippy::vec_box)]

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use otel_audit_event::redact::{Redacted, RedactedField, push_inline_digest};
use otel_audit_event::{
    Actor, ActorType, AuditEvent, Category, ContentDigest, DigestAlgorithm,
    MAX_ATTRIBUTE_VALUE_BYTES, Outcome, Redaction, RedactionMethod, SealedContent, Severity,
    Target, TraceContext,
};

use crate::layer::Inner;

/// A range of a record's text buffer, in 32-bit offsets: half the size of
/// a `usize` pair, so that an [`Op`] naming a field and its value fits in
/// 32 bytes (see [`Op`]). A record holds at most `u32::MAX` bytes of text
/// (see [`Record::seal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct At {
    start: u32,
    end: u32,
}

impl At {
    /// The empty text at the buffer's start.
    const EMPTY: At = At { start: 0, end: 0 };

    /// The range `start..end`, if both fit in 32 bits.
    fn new(start: usize, end: usize) -> Option<At> {
        Some(At {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }
}

/// An optional [`At`] in the same 8 bytes (`Option<At>` takes 12, which
/// would push the larger [`Op`]s past 32 bytes): `end < start` means none,
/// which no range of the buffer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OptAt(At);

impl OptAt {
    const NONE: OptAt = OptAt(At {
        start: u32::MAX,
        end: 0,
    });

    fn get(self) -> Option<At> {
        (self.0.start <= self.0.end).then_some(self.0)
    }
}

impl From<Option<At>> for OptAt {
    fn from(at: Option<At>) -> Self {
        at.map_or(OptAt::NONE, OptAt)
    }
}

/// A text: a name the code gave (`&'static str`) or a range of a record's
/// text buffer. 16 bytes: the range sits beside the pointer, whose null
/// value tells the two apart (checked below).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Str {
    Static(&'static str),
    At(At),
}

/// Where a redaction result goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// An attribute (or, for a digest or sealed value, `content_digests` /
    /// `sealed_content`).
    Attribute,
    /// A typed GenAI column (an attribute for names without one), as the
    /// span shows it: a digest becomes its inline text there.
    GenAi,
}

/// What a dropped value shows.
const DROPPED: &str = "[dropped]";

/// How `push_inline_digest` starts the text of a keyed digest.
const HMAC_PREFIX: &str = "hmac-sha256:";

/// Where a digest's inline text, key id and hex digits are in the buffer.
#[derive(Clone, Copy)]
struct InlineDigest {
    text: At,
    key_id: OptAt,
    /// `None` only when the text did not fit (see [`Record::seal`]).
    hex: Option<u32>,
}

/// One step of assembling the event, in the order the call made them.
///
/// Kept to 32 bytes, two to a cache line: a call writes a handful of these
/// into its thread's record and [`Record::copy_out`] copies them into a
/// pooled record whose lines were last touched by the exporter's thread on
/// another core, so every line saved is a cross-core transfer saved (at
/// 104 bytes, the six operations of a five-argument call took ten lines,
/// now three). Hence 32-bit text ranges ([`At`]), values that are always
/// copied texts held as ranges rather than [`Str`], a digest's bytes read
/// back from the hex of its inline text (which the record keeps anyway),
/// and the rare many-field steps (actor, a redaction's detector) split
/// into several operations.
#[derive(Clone, Copy)]
enum Op {
    Attribute {
        name: Str,
        value: At,
    },
    GenAiText {
        key: Str,
        value: At,
    },
    Redaction {
        field: Str,
        method: RedactionMethod,
        key_id: OptAt,
    },
    /// The detector of the [`Op::Redaction`] just before.
    RedactionDetector(At),
    Digest {
        field: Str,
        algorithm: DigestAlgorithm,
        key_id: OptAt,
        /// Where the digest's 64 hex digits start (the end of its inline text).
        hex: u32,
    },
    /// Replaces the actor; its texts follow as [`Op::ActorText`].
    Actor(Option<ActorType>),
    ActorText(ActorPart, At),
    Target {
        kind: OptAt,
        id: OptAt,
    },
    Error {
        kind: &'static str,
        message: OptAt,
    },
    /// `blocked(...)`: the detectors that fired replace any earlier list.
    ClearDetectors,
    Detector(At),
    BlockReason(OptAt),
}

/// An actor's text fields, one [`Op::ActorText`] each.
#[derive(Clone, Copy)]
enum ActorPart {
    Id,
    Role,
    Ip,
    Session,
}

// The sizes the comments above promise (on 64-bit targets; pointers are
// smaller elsewhere, and so are these).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Str>() == 16);
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Op>() == 32);

/// A span's W3C ids, kept as numbers until the event is assembled.
#[derive(Clone, Copy)]
pub(crate) struct Ids {
    pub(crate) trace: [u64; 2],
    pub(crate) span: u64,
    pub(crate) parent: Option<u64>,
}

impl Ids {
    pub(crate) fn context(&self) -> TraceContext {
        TraceContext {
            trace_id: Some(format!("{:016x}{:016x}", self.trace[0], self.trace[1])),
            span_id: Some(format!("{:016x}", self.span)),
            parent_span_id: self.parent.map(|p| format!("{p:016x}")),
        }
    }
}

/// What only the layer knows when the call ends: the event's time, tenant
/// and service (from the layer), and its trace. The id (a UUIDv7 of the
/// event's time) is drawn at assembly.
pub(crate) struct Envelope {
    pub(crate) layer: Arc<Inner>,
    /// Converted to a calendar time at assembly, off the calling thread.
    pub(crate) time: SystemTime,
    pub(crate) duration_ns: Option<i64>,
    pub(crate) trace: Option<Ids>,
}

/// An audit event under construction: redacted values, not yet assembled.
pub(crate) struct Record {
    pub(crate) action: Str,
    pub(crate) category: Category,
    pub(crate) severity: Severity,
    pub(crate) outcome: Outcome,
    pub(crate) input_tokens: Option<i64>,
    pub(crate) output_tokens: Option<i64>,
    pub(crate) temperature: Option<f64>,
    pub(crate) safety_passed: Option<bool>,
    /// Something was stored without going through the redactor: assembly
    /// applies the whole policy (`redact_event`), not only to the typed
    /// identity fields.
    pub(crate) whole_policy: bool,
    texts: String,
    ops: Vec<Op>,
    /// Rare (`encrypt`), so kept as it comes.
    sealed: Vec<SealedContent>,
    pub(crate) envelope: Option<Envelope>,
    /// The layer whose policy the call applied, handed over by the call
    /// (see `Ctx::hand_off`) so the span's close reuses that reference
    /// rather than counting a new one.
    pub(crate) layer: Option<Arc<Inner>>,
}

/// Most records the pool keeps; beyond it, records are freed. The default
/// export queue's capacity: the pool never holds more records than one full
/// queue does.
const POOL_MAX: usize = 4096;
const NEW_TEXT_BYTES: usize = 512;
const NEW_OPS: usize = 16;
/// How many records a thread takes from the pool at once.
const REFILL: usize = 32;
/// A record whose buffers grew past these is freed rather than kept.
const KEEP_TEXT_BYTES: usize = 16 * 1024;
const KEEP_OPS: usize = 256;

static POOL: Mutex<Vec<Box<Record>>> = Mutex::new(Vec::new());

thread_local! {
    /// The record `#[audit]` calls on this thread fill (see [`Record::hot`]).
    static HOT: Cell<Option<Box<Record>>> = const { Cell::new(None) };
}

thread_local! {
    /// Records this thread took from the pool and has not used yet.
    static STASH: RefCell<Vec<Box<Record>>> = const { RefCell::new(Vec::new()) };
}

fn pool() -> MutexGuard<'static, Vec<Box<Record>>> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

impl Record {
    fn empty() -> Self {
        Record {
            action: Str::Static(""),
            category: Category::System,
            severity: Severity::Info,
            outcome: Outcome::Success,
            input_tokens: None,
            output_tokens: None,
            temperature: None,
            safety_passed: None,
            whole_policy: false,
            // Room for a typical call, so a fresh record does not grow (and
            // copy) its buffers a text at a time.
            texts: String::with_capacity(NEW_TEXT_BYTES),
            ops: Vec::with_capacity(NEW_OPS),
            sealed: Vec::new(),
            envelope: None,
            layer: None,
        }
    }

    /// A record for a new event, recycled when one is spare.
    pub(crate) fn take(category: Category, severity: Severity) -> Box<Record> {
        let spare = STASH
            .try_with(|stash| {
                let mut stash = stash.borrow_mut();
                if stash.is_empty() {
                    // Never wait for the pool: a fresh record is cheaper.
                    if let Ok(mut pool) = POOL.try_lock() {
                        let from = pool.len().saturating_sub(REFILL);
                        stash.extend(pool.drain(from..));
                    }
                }
                stash.pop()
            })
            .ok()
            .flatten();
        let mut r = spare.unwrap_or_else(|| Box::new(Record::empty()));
        r.category = category;
        r.severity = severity;
        r
    }

    /// Empties the record for reuse; false when it grew too large to keep.
    fn reset(&mut self) -> bool {
        self.action = Str::Static("");
        self.outcome = Outcome::Success;
        self.input_tokens = None;
        self.output_tokens = None;
        self.temperature = None;
        self.safety_passed = None;
        self.whole_policy = false;
        self.texts.clear();
        self.ops.clear();
        self.sealed.clear();
        self.envelope = None;
        self.layer = None;
        self.texts.capacity() <= KEEP_TEXT_BYTES && self.ops.capacity() <= KEEP_OPS
    }

    /// The record an `#[audit]` call on this thread fills: the same memory
    /// every call, so it stays in this core's cache. Pooled records were
    /// last touched by the exporter's thread on another core; filled value
    /// by value, each of their cache lines had to come back on the first
    /// write, one after another. [`copy_out`](Self::copy_out) moves the
    /// contents into one of them in two bulk copies instead.
    pub(crate) fn hot(category: Category, severity: Severity) -> Box<Record> {
        let mut r = HOT
            .try_with(Cell::take)
            .ok()
            .flatten()
            .unwrap_or_else(|| Box::new(Record::empty()));
        r.category = category;
        r.severity = severity;
        r
    }

    /// A pooled record with this one's contents, for the exporter. This
    /// one keeps its texts (a span's fields borrow them) until
    /// [`cool_down`](Self::cool_down).
    pub(crate) fn copy_out(&mut self) -> Box<Record> {
        let mut r = Record::take(self.category, self.severity);
        debug_assert!(r.texts.is_empty() && r.ops.is_empty() && r.sealed.is_empty());
        r.action = self.action;
        r.outcome = self.outcome;
        r.input_tokens = self.input_tokens;
        r.output_tokens = self.output_tokens;
        r.temperature = self.temperature;
        r.safety_passed = self.safety_passed;
        r.whole_policy = self.whole_policy;
        // Same offsets: the copy's text starts empty.
        r.texts.push_str(&self.texts);
        r.ops.extend_from_slice(&self.ops);
        // Rare (`encrypt`): moved, not copied.
        std::mem::swap(&mut r.sealed, &mut self.sealed);
        r.envelope = self.envelope.take();
        r
    }

    /// Empties this thread's record (see [`hot`](Self::hot)) for its next call.
    pub(crate) fn cool_down(mut self: Box<Self>) {
        if self.reset() {
            let _ = HOT.try_with(|h| h.set(Some(self)));
        }
    }

    /// Returns a record no span took to this thread's spares.
    pub(crate) fn release(mut self: Box<Self>) {
        if self.reset() {
            let _ = STASH.try_with(|stash| {
                let mut stash = stash.borrow_mut();
                if stash.len() < REFILL {
                    stash.push(self);
                }
            });
        }
    }

    /// Returns used records to the pool (one lock for all of them).
    pub(crate) fn recycle(records: &mut Vec<Box<Record>>) {
        records.retain_mut(|r| r.reset());
        if records.is_empty() {
            return;
        }
        let mut pool = pool();
        let room = POOL_MAX.saturating_sub(pool.len());
        let n = records.len().min(room);
        pool.extend(records.drain(..n));
        drop(pool);
        records.clear();
    }

    /// The range of the text written since `start`. A record's texts stay
    /// below 4 GiB so that ranges fit in 32 bits ([`At`]): a text that
    /// would pass that is not kept, and stands as the empty text (it fails
    /// closed: nothing of it is recorded). No sensible call comes near.
    fn seal(&mut self, start: usize) -> At {
        match At::new(start, self.texts.len()).filter(|at| at.end < u32::MAX) {
            Some(at) => at,
            None => {
                self.texts.truncate(start);
                At::EMPTY
            }
        }
    }

    /// Copies `s` into the text buffer.
    fn text_at(&mut self, s: &str) -> At {
        let start = self.texts.len();
        self.texts.push_str(s);
        self.seal(start)
    }

    /// Copies `s` into the text buffer.
    pub(crate) fn text(&mut self, s: &str) -> Str {
        Str::At(self.text_at(s))
    }

    /// The text `s` stands for.
    pub(crate) fn get(&self, s: Str) -> &str {
        match s {
            Str::Static(s) => s,
            Str::At(at) => self.at(at),
        }
    }

    /// The text of a range of the buffer.
    fn at(&self, at: At) -> &str {
        &self.texts[at.start as usize..at.end as usize]
    }

    fn opt_text(&mut self, s: Option<&str>) -> OptAt {
        s.map(|s| self.text_at(s)).into()
    }

    /// Keeps a result's redaction records; those naming `name` point at it
    /// instead of copying it.
    pub(crate) fn keep_redactions(&mut self, name: Str, redactions: &[Redaction]) {
        for r in redactions {
            let field = if r.field == self.get(name) {
                name
            } else {
                self.text(&r.field)
            };
            let key_id = self.opt_text(r.key_id.as_deref());
            self.ops.push(Op::Redaction {
                field,
                method: r.method,
                key_id,
            });
            if let Some(detector) = &r.detector {
                let detector = self.text_at(detector);
                self.ops.push(Op::RedactionDetector(detector));
            }
        }
    }

    /// Stores a redaction result for `name` and returns the text a span
    /// shows for it.
    pub(crate) fn put(&mut self, name: Str, r: RedactedField<'_>, place: Place) -> Str {
        let RedactedField { value, redactions } = r;
        self.keep_redactions(name, &redactions);
        match value {
            Redacted::Clear(s) => {
                let shown = self.text_at(&s);
                self.place_text(name, shown, place, true)
            }
            Redacted::Replaced(s) => {
                let shown = self.text_at(&s);
                self.place_text(name, shown, place, true)
            }
            // Only a GenAI column keeps the marker (as its value, which is
            // always a range of the buffer); an attribute is left out.
            Redacted::Dropped => match place {
                Place::Attribute => Str::Static(DROPPED),
                Place::GenAi => {
                    let shown = self.text_at(DROPPED);
                    self.place_text(name, shown, place, false)
                }
            },
            Redacted::Digest(d) => {
                let shown = self.push_digest(d.algorithm, d.key_id.as_deref(), &d.digest);
                if place == Place::Attribute {
                    self.keep_digest(name, d.algorithm, shown);
                }
                self.place_text(name, shown.text, place, false)
            }
            Redacted::Sealed(mut s) => {
                let start = self.texts.len();
                let _ = write!(self.texts, "[encrypted:{}:{}]", s.algorithm, s.key_id);
                let shown = self.seal(start);
                if place == Place::Attribute {
                    if s.field != self.get(name) {
                        s.field = self.get(name).to_owned();
                    }
                    self.sealed.push(s);
                }
                self.place_text(name, shown, place, false)
            }
        }
    }

    /// Stores a value that passed the policy unchanged, as [`put`](Self::put)
    /// stores a `Redacted::Clear` result with no redaction records.
    pub(crate) fn put_clear(&mut self, name: Str, text: &str, place: Place) -> Str {
        let shown = self.text_at(text);
        self.place_text(name, shown, place, true)
    }

    /// Stores an HMAC-SHA256 digest computed by the caller, as
    /// [`put`](Self::put) stores the result of the `hmac` method: the same
    /// record, digest and inline text, without the owned intermediate values.
    pub(crate) fn put_hmac(
        &mut self,
        name: Str,
        key_id: &str,
        digest: [u8; 32],
        place: Place,
    ) -> Str {
        // The inline text first: the redaction record's key id is a range
        // of it rather than a copy.
        let shown = self.push_digest(DigestAlgorithm::HmacSha256, Some(key_id), &digest);
        self.ops.push(Op::Redaction {
            field: name,
            method: RedactionMethod::Hmac,
            key_id: shown.key_id,
        });
        if place == Place::Attribute {
            self.keep_digest(name, DigestAlgorithm::HmacSha256, shown);
        }
        self.place_text(name, shown.text, place, false)
    }

    /// Writes a digest's inline text, the text a span (and a GenAI column)
    /// shows for it, and notes where its key id and hex digits are: the
    /// digest kept for an attribute points into it instead of holding its
    /// own copies.
    fn push_digest(
        &mut self,
        algorithm: DigestAlgorithm,
        key_id: Option<&str>,
        digest: &[u8; 32],
    ) -> InlineDigest {
        let start = self.texts.len();
        push_inline_digest(&mut self.texts, algorithm, key_id, digest);
        let text = self.seal(start);
        let hex = self.texts.len().checked_sub(64).filter(|&h| h >= start);
        let key_id = key_id.map(|k| {
            // `hmac-sha256:<key id>:<hex>`; copied when the text has another form.
            let at = start + HMAC_PREFIX.len();
            if self.texts.as_bytes().get(at..at + k.len()) == Some(k.as_bytes()) {
                // Inside the sealed text, so it fits.
                At::new(at, at + k.len()).unwrap_or(At::EMPTY)
            } else {
                self.text_at(k)
            }
        });
        InlineDigest {
            text,
            key_id: key_id.into(),
            // `seal` kept the text, so the hex offset fits too.
            hex: hex.and_then(|h| u32::try_from(h).ok()),
        }
    }

    /// A digest standing in for `name`'s value, kept in `content_digests`
    /// (for an attribute).
    fn keep_digest(&mut self, name: Str, algorithm: DigestAlgorithm, d: InlineDigest) {
        // No hex only when the record's text overflowed (see `seal`): the
        // digest is then left out with the text.
        if let Some(hex) = d.hex {
            self.ops.push(Op::Digest {
                field: name,
                algorithm,
                key_id: d.key_id,
                hex,
            });
        }
    }

    /// Where the text a span shows for `name` goes in the event: the
    /// attribute when it is the value itself, the GenAI column in any case
    /// (a digest or sealed value by its inline text).
    fn place_text(&mut self, name: Str, shown: At, place: Place, is_value: bool) -> Str {
        match place {
            Place::Attribute if is_value => self.ops.push(Op::Attribute { name, value: shown }),
            Place::Attribute => {}
            Place::GenAi => self.ops.push(Op::GenAiText {
                key: name,
                value: shown,
            }),
        }
        Str::At(shown)
    }

    /// An attribute stored without the redactor (numbers under names with no
    /// typed column): the whole policy runs at assembly.
    pub(crate) fn raw_attribute(&mut self, name: Str, value: impl std::fmt::Display) {
        let start = self.texts.len();
        let _ = write!(self.texts, "{value}");
        let value = self.seal(start);
        self.ops.push(Op::Attribute { name, value });
        self.whole_policy = true;
    }

    pub(crate) fn set_gen_ai_int(&mut self, key: Str, v: i64) {
        match self.get(key) {
            "gen_ai.usage.input_tokens" => self.input_tokens = Some(v),
            "gen_ai.usage.output_tokens" => self.output_tokens = Some(v),
            _ => self.raw_attribute(key, v),
        }
    }

    pub(crate) fn set_gen_ai_float(&mut self, key: Str, v: f64) {
        match self.get(key) {
            "gen_ai.request.temperature" => self.temperature = Some(v),
            _ => self.raw_attribute(key, v),
        }
    }

    pub(crate) fn set_actor(&mut self, a: &Actor) {
        self.ops.push(Op::Actor(a.kind));
        let parts = [
            (ActorPart::Id, &a.id),
            (ActorPart::Role, &a.role),
            (ActorPart::Ip, &a.ip),
            (ActorPart::Session, &a.session),
        ];
        for (part, text) in parts {
            if let Some(text) = text {
                let at = self.text_at(text);
                self.ops.push(Op::ActorText(part, at));
            }
        }
    }

    pub(crate) fn set_target(&mut self, t: &Target) {
        let op = Op::Target {
            kind: self.opt_text(t.kind.as_deref()),
            id: self.opt_text(t.id.as_deref()),
        };
        self.ops.push(op);
    }

    /// The error's type and its (redacted) message.
    pub(crate) fn set_error(&mut self, kind: &'static str, message: Option<&str>) {
        let message = self.opt_text(message);
        self.ops.push(Op::Error { kind, message });
    }

    /// A failed safety check: the detectors that fired and the (redacted) reason.
    pub(crate) fn set_blocked(&mut self, detectors: &[String], reason: Option<&str>) {
        self.ops.push(Op::ClearDetectors);
        for d in detectors {
            let d = self.text_at(d);
            self.ops.push(Op::Detector(d));
        }
        let reason = self.opt_text(reason);
        self.ops.push(Op::BlockReason(reason));
    }

    /// The digest whose hex digits start at `hex`.
    fn digest_at(&self, hex: u32) -> [u8; 32] {
        let mut digest = [0u8; 32];
        let at = hex as usize;
        // The hex was written by `push_inline_digest` from these bytes.
        hex::decode_to_slice(&self.texts[at..at + 64], &mut digest)
            .expect("a digest's inline text ends in its 64 hex digits");
        digest
    }

    /// Builds the event (the record must have its envelope) and leaves the
    /// record to be reset.
    pub(crate) fn assemble(&mut self) -> AuditEvent {
        let envelope = self
            .envelope
            .take()
            .expect("a record is exported only after its envelope is set");
        let layer = &envelope.layer;
        let time = DateTime::<Utc>::from(envelope.time);
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            u64::try_from(time.timestamp()).unwrap_or(0),
            time.timestamp_subsec_nanos(),
        );
        let mut ev = AuditEvent {
            event_id: uuid::Uuid::new_v7(ts),
            time,
            duration_ns: envelope.duration_ns,
            severity: self.severity,
            tenant: layer.tenant.clone(),
            service: layer.service.clone(),
            actor: Actor::default(),
            category: self.category,
            action: self.get(self.action).to_owned(),
            outcome: self.outcome,
            target: Target::default(),
            error: Default::default(),
            gen_ai: Default::default(),
            safety: Default::default(),
            content_digests: Vec::new(),
            sealed_content: std::mem::take(&mut self.sealed),
            trace: envelope.trace.map(|t| t.context()).unwrap_or_default(),
            attributes: Default::default(),
            redactions: Vec::new(),
        };
        ev.gen_ai.input_tokens = self.input_tokens;
        ev.gen_ai.output_tokens = self.output_tokens;
        ev.gen_ai.temperature = self.temperature;
        ev.safety.passed = self.safety_passed;
        let own = |s: Str| self.get(s).to_owned();
        let own_at = |at: At| self.at(at).to_owned();
        let own_opt = |at: OptAt| at.get().map(own_at);
        for op in &self.ops {
            match *op {
                Op::Attribute { name, value } => {
                    insert_attribute(&mut ev, self.get(name), self.at(value));
                }
                Op::GenAiText { key, value } => {
                    let g = &mut ev.gen_ai;
                    let slot = match self.get(key) {
                        "gen_ai.provider.name" => &mut g.provider,
                        "gen_ai.operation.name" => &mut g.operation,
                        "gen_ai.request.model" => &mut g.request_model,
                        "gen_ai.response.model" => &mut g.response_model,
                        "gen_ai.conversation.id" => &mut g.conversation_id,
                        "gen_ai.agent.name" => &mut g.agent_name,
                        "gen_ai.tool.name" => &mut g.tool_name,
                        other => {
                            insert_attribute(&mut ev, other, self.at(value));
                            continue;
                        }
                    };
                    *slot = Some(own_at(value));
                }
                Op::Redaction {
                    field,
                    method,
                    key_id,
                } => ev.redactions.push(Redaction {
                    field: own(field),
                    method,
                    detector: None,
                    key_id: own_opt(key_id),
                }),
                Op::RedactionDetector(d) => {
                    if let Some(r) = ev.redactions.last_mut() {
                        r.detector = Some(own_at(d));
                    }
                }
                Op::Digest {
                    field,
                    algorithm,
                    key_id,
                    hex,
                } => ev.content_digests.push(ContentDigest {
                    field: own(field),
                    algorithm,
                    key_id: own_opt(key_id),
                    digest: self.digest_at(hex),
                }),
                Op::Actor(kind) => {
                    ev.actor = Actor {
                        kind,
                        ..Actor::default()
                    }
                }
                Op::ActorText(part, text) => {
                    let a = &mut ev.actor;
                    let slot = match part {
                        ActorPart::Id => &mut a.id,
                        ActorPart::Role => &mut a.role,
                        ActorPart::Ip => &mut a.ip,
                        ActorPart::Session => &mut a.session,
                    };
                    *slot = Some(own_at(text));
                }
                Op::Target { kind, id } => {
                    ev.target = Target {
                        kind: own_opt(kind),
                        id: own_opt(id),
                    }
                }
                Op::Error { kind, message } => {
                    ev.error.kind = Some(kind.to_owned());
                    ev.error.message = own_opt(message);
                }
                Op::ClearDetectors => ev.safety.detectors.clear(),
                Op::Detector(d) => ev.safety.detectors.push(own_at(d)),
                Op::BlockReason(r) => ev.safety.block_reason = own_opt(r),
            }
        }
        // Identity fields (actor, target, ...) follow the policy too.
        // Attributes went through the redactor when they were recorded;
        // only something stored without it sends the whole event through.
        if self.whole_policy {
            layer.redactor.redact_event(&mut ev);
        } else {
            layer.redactor.redact_typed_fields(&mut ev);
        }
        ev
    }
}

/// Stores redacted text as an attribute, cut to the attribute limit
/// (recorded as `truncate`) as the policy would at export.
fn insert_attribute(ev: &mut AuditEvent, name: &str, text: &str) {
    let mut text = text;
    if text.len() > MAX_ATTRIBUTE_VALUE_BYTES {
        let mut end = MAX_ATTRIBUTE_VALUE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text = &text[..end];
        let rec = Redaction {
            field: name.to_owned(),
            method: RedactionMethod::Truncate,
            detector: None,
            key_id: None,
        };
        if !ev.redactions.contains(&rec) {
            ev.redactions.push(rec);
        }
    }
    ev.attributes.insert(name.to_owned(), text.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_cut_to_the_limit() {
        let mut ev = AuditEvent::new("t", "s", Category::System, "a");
        insert_attribute(&mut ev, "big", &"é".repeat(MAX_ATTRIBUTE_VALUE_BYTES));
        insert_attribute(&mut ev, "small", "x");
        assert!(ev.attributes["big"].len() <= MAX_ATTRIBUTE_VALUE_BYTES);
        assert!(ev.attributes["big"].is_char_boundary(ev.attributes["big"].len()));
        assert_eq!(ev.attributes["small"], "x");
        assert_eq!(ev.redactions.len(), 1);
        assert_eq!(ev.redactions[0].method, RedactionMethod::Truncate);
    }

    #[test]
    fn unknown_gen_ai_numbers_send_the_event_through_the_policy() {
        let mut r = Record::take(Category::Inference, Severity::Info);
        r.set_gen_ai_int(Str::Static("gen_ai.usage.input_tokens"), 3);
        assert!(!r.whole_policy);
        r.set_gen_ai_int(Str::Static("gen_ai.unknown.count"), 3);
        assert!(r.whole_policy);
        assert_eq!(r.input_tokens, Some(3));
    }

    #[test]
    fn ids_format_as_w3c_hex() {
        let ids = Ids {
            trace: [0x0123_4567_89ab_cdef, 0x1],
            span: 0xff,
            parent: Some(u64::MAX),
        };
        let t = ids.context();
        assert_eq!(
            t.trace_id.as_deref(),
            Some("0123456789abcdef0000000000000001")
        );
        assert_eq!(t.span_id.as_deref(), Some("00000000000000ff"));
        assert_eq!(t.parent_span_id.as_deref(), Some("ffffffffffffffff"));
    }

    fn assembled(layer: &crate::AuditLayer, fill: impl FnOnce(&mut Record)) -> AuditEvent {
        let mut r = Record::take(Category::Inference, Severity::Info);
        r.action = Str::Static("llm.chat");
        fill(&mut r);
        r.envelope = Some(Envelope {
            layer: Arc::clone(&layer.inner),
            time: SystemTime::UNIX_EPOCH,
            duration_ns: Some(5),
            trace: None,
        });
        let mut ev = r.assemble();
        ev.event_id = uuid::Uuid::nil();
        ev
    }

    /// A layer with an HMAC key and an exporter that keeps events in memory.
    fn test_layer() -> crate::AuditLayer {
        crate::AuditLayer::builder()
            .exporter(crate::export::InMemoryExporter::default())
            .hmac_key("k-2026", [9u8; 32])
            .build()
            .unwrap()
    }

    #[test]
    fn the_hmac_shortcut_stores_what_the_redactor_would() {
        let layer = test_layer();
        let redactor = layer.redactor();
        let text = "Summarise the claim of jane@example.com";
        for place in [Place::Attribute, Place::GenAi] {
            let name = Str::Static(if place == Place::GenAi {
                "gen_ai.request.model"
            } else {
                "prompt"
            });
            let mut shown = Vec::new();
            let slow = assembled(&layer, |r| {
                let out =
                    redactor.apply(r.get(name), text, &otel_audit_event::redact::Method::Hmac);
                let s = r.put(name, out, place);
                shown.push(r.get(s).to_owned());
            });
            let fast = assembled(&layer, |r| {
                let ring = redactor.keys().hmac.as_ref().unwrap();
                let digest = ring.hmac_sha256(ring.active_id(), text.as_bytes()).unwrap();
                let s = r.put_hmac(name, ring.active_id(), digest, place);
                shown.push(r.get(s).to_owned());
            });
            assert_eq!(slow, fast);
            assert_eq!(shown[0], shown[1]);
            assert!(shown[0].starts_with("hmac-sha256:k-2026:"), "{}", shown[0]);
        }
    }

    /// `#[audit]` stores a value without scanning it when the redactor says
    /// no detector could match it; what it stores must be what the scan
    /// would have given, and every value a detector finds must be scanned.
    #[test]
    fn the_clear_shortcut_stores_what_the_scan_would() {
        let layer = test_layer();
        let redactor = layer.redactor();
        // What calls pass most: no detector could match them.
        let clear = ["gpt-4o-mini", "user-4711", "512", "0.2", ""];
        for text in clear {
            assert!(!redactor.may_detect(text), "{text}");
            let name = Str::Static("note");
            let scanned = assembled(&layer, |r| {
                r.put(name, redactor.scan_field("note", text), Place::Attribute);
            });
            let stored = assembled(&layer, |r| {
                r.put_clear(name, text, Place::Attribute);
            });
            assert_eq!(scanned, stored, "{text}");
            assert!(scanned.redactions.is_empty(), "{text}");
        }
        // Values with something to find are never taken for clear ones.
        let sensitive = [
            "4111111111111111",
            "call 555-123-4567",
            "jane@example.com",
            "10.1.2.3",
            "fe80::1",
            "123-45-6789",
            "GB82WEST12345698765432",
            "sk-proj-abcdefghijklmnop1234",
            "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
        ];
        for text in sensitive {
            assert!(redactor.may_detect(text), "{text}");
            let found = redactor.scan_field("note", text);
            assert!(!found.redactions.is_empty(), "{text}");
        }
    }

    /// Every kind of step comes back out of the compact operations as it
    /// went in (the rare ones are split over several operations).
    #[test]
    fn every_step_assembles_what_it_recorded() {
        let layer = test_layer();
        let kept = [
            Redaction {
                field: "note".into(),
                method: RedactionMethod::Mask,
                detector: Some("payment_card".into()),
                key_id: Some("k-1".into()),
            },
            Redaction {
                field: "other".into(),
                method: RedactionMethod::Drop,
                detector: None,
                key_id: None,
            },
        ];
        let ev = assembled(&layer, |r| {
            // Replaced by the second actor as a whole.
            r.set_actor(&Actor {
                id: Some("first".into()),
                kind: Some(ActorType::Agent),
                role: Some("old-role".into()),
                ip: None,
                session: Some("s-0".into()),
            });
            r.set_actor(&Actor {
                id: Some("user-7".into()),
                kind: Some(ActorType::User),
                role: Some("admin".into()),
                ip: Some("203.0.113.9".into()),
                session: None,
            });
            r.set_target(&Target {
                kind: Some("doc".into()),
                id: None,
            });
            r.set_error("io::Error", Some("boom"));
            r.set_blocked(&["email".to_owned(), "phone".to_owned()], None);
            let field = r.text("note");
            r.keep_redactions(field, &kept);
            let dropped = RedactedField {
                value: Redacted::Dropped,
                redactions: Vec::new(),
            };
            let shown = r.put(Str::Static("gen_ai.agent.name"), dropped, Place::GenAi);
            assert_eq!(r.get(shown), "[dropped]");
            let dropped = RedactedField {
                value: Redacted::Dropped,
                redactions: Vec::new(),
            };
            let shown = r.put(Str::Static("secret"), dropped, Place::Attribute);
            assert_eq!(r.get(shown), "[dropped]");
            let digest = |algorithm, key_id: Option<&str>| RedactedField {
                value: Redacted::Digest(ContentDigest {
                    field: "x".into(),
                    algorithm,
                    key_id: key_id.map(Into::into),
                    digest: [0xa5; 32],
                }),
                redactions: Vec::new(),
            };
            let plain = r.put(
                Str::Static("plain"),
                digest(DigestAlgorithm::Sha256, None),
                Place::Attribute,
            );
            assert_eq!(r.get(plain), format!("sha256:{}", "a5".repeat(32)));
            r.put(
                Str::Static("keyed"),
                digest(DigestAlgorithm::HmacSha256, Some("k-9")),
                Place::Attribute,
            );
        });
        assert_eq!(
            ev.actor,
            Actor {
                id: Some("user-7".into()),
                kind: Some(ActorType::User),
                role: Some("admin".into()),
                ip: Some("203.0.113.9".into()),
                session: None,
            }
        );
        assert_eq!(ev.target.kind.as_deref(), Some("doc"));
        assert_eq!(ev.target.id, None);
        assert_eq!(ev.error.kind.as_deref(), Some("io::Error"));
        assert_eq!(ev.error.message.as_deref(), Some("boom"));
        assert_eq!(ev.safety.detectors, ["email", "phone"]);
        assert_eq!(ev.safety.block_reason, None);
        assert_eq!(ev.redactions, kept);
        assert_eq!(ev.gen_ai.agent_name.as_deref(), Some("[dropped]"));
        assert!(!ev.attributes.contains_key("secret"));
        let digests: Vec<_> = ev
            .content_digests
            .iter()
            .map(|d| (d.field.as_str(), d.algorithm, d.key_id.as_deref(), d.digest))
            .collect();
        assert_eq!(
            digests,
            [
                ("plain", DigestAlgorithm::Sha256, None, [0xa5; 32]),
                (
                    "keyed",
                    DigestAlgorithm::HmacSha256,
                    Some("k-9"),
                    [0xa5; 32]
                ),
            ]
        );
    }

    #[test]
    fn recycled_records_come_back_empty() {
        let mut r = Record::take(Category::Admin, Severity::Warn);
        let name = r.text("note");
        r.put(
            name,
            RedactedField {
                value: Redacted::Clear("x".into()),
                redactions: Vec::new(),
            },
            Place::Attribute,
        );
        r.outcome = Outcome::Denied;
        let mut used = vec![r];
        Record::recycle(&mut used);
        assert!(used.is_empty());
        // Whatever this thread gets next (recycled or new) is empty.
        for _ in 0..(REFILL + 2) {
            let r = Record::take(Category::System, Severity::Info);
            assert!(r.ops.is_empty() && r.texts.is_empty() && r.envelope.is_none());
            assert_eq!(r.outcome, Outcome::Success);
        }
    }
}
