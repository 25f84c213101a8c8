//! The redaction policy engine, shared by the in-process audit layer and the
//! collector: sensitive values are redacted before they reach any exporter,
//! WAL or disk.
//!
//! A [`Policy`] (loadable from YAML) and [`Keys`] make a [`Redactor`]. For each
//! named value the redactor decides a [`Method`] — the first matching rule,
//! else the content-field method (HMAC by default), else clear (denylist mode)
//! or HMAC (allowlist mode, fail closed) — and then runs the [`Detector`]s
//! over whatever is still readable, replacing each match in place. Every
//! change is recorded as a [`Redaction`] (never with the value).
//!
//! ```
//! use otel_audit_event::redact::{Redacted, Redactor};
//! use otel_audit_event::{AuditEvent, Category};
//!
//! let redactor = Redactor::default_with_key("hmac-2025", &[42u8; 32])?;
//!
//! // One value at a time (the in-process layer):
//! let out = redactor.redact_field("error.message", "no account for bob@example.org");
//! assert_eq!(out.text(), Some("no account for [email:****.org]"));
//! assert_eq!(out.redactions[0].detector.as_deref(), Some("email"));
//! let out = redactor.redact_field("gen_ai.prompt", "What is my balance?");
//! assert!(matches!(out.value, Redacted::Digest(_)));
//!
//! // A whole event (the collector):
//! let mut event = AuditEvent::new("acme", "chat", Category::Inference, "llm.chat");
//! event.attributes.insert("gen_ai.input.messages".into(), "my SSN is 123-45-6789".into());
//! event.attributes.insert("http.route".into(), "/v1/chat".into());
//! redactor.redact_event(&mut event);
//! assert!(!event.attributes.contains_key("gen_ai.input.messages"));
//! assert_eq!(event.content_digests[0].field, "gen_ai.input.messages");
//! assert_eq!(event.attributes["http.route"], "/v1/chat");
//! event.validate()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! `docs/REDACTION.md` describes the methods, detectors, policy file and key
//! rotation for operators.

mod detect;
mod error;
mod keys;
mod method;
mod pattern;
mod policy;
mod sensitive;

use std::borrow::Cow;
use std::fmt::Write as _;

pub use detect::{DETECTOR_COUNT, Detector, Finding, detect};
pub use error::{KeyError, PolicyError, RedactError};
pub use keys::{
    AES_KEY_BYTES, KeyPurpose, Keyring, Keys, MAX_KEY_ID_BYTES, MIN_HMAC_KEY_BYTES, NONCE_BYTES,
    SEALED_ALGORITHM, TAG_BYTES, check_key_id, decrypt, sha256_digest, verify_digest,
};
pub use method::{
    DEFAULT_MASK_KEEP_CHARS, MAX_METHOD_CHARS, METHOD_SYNTAX, Method, MethodParseError,
    parse_method,
};
pub use policy::{
    DEFAULT_CONTENT_FIELDS, DetectorSetting, DetectorsConfig, KeyConfig, KeyEncoding,
    KeyringConfig, KeysConfig, Mode, Policy, PolicyDocument, Rule,
};
pub use sensitive::{REDACTED_PLACEHOLDER, Sensitive};

use crate::model::{
    AuditEvent, ContentDigest, DigestAlgorithm, Redaction, RedactionMethod, SealedContent,
};
use crate::validate::{
    MAX_ATTRIBUTE_VALUE_BYTES, MAX_LIST_ENTRIES, MAX_MESSAGE_BYTES, MAX_SHORT_BYTES,
};
use pattern::{Pattern, PatternSet};

/// The names under which [`Redactor::redact_event`] applies the policy to an
/// event's typed fields. Rules and allow patterns use these names.
pub mod field {
    /// `actor.id` (not scanned by detectors; pseudonymise with a rule `hmac`).
    pub const ACTOR_ID: &str = "actor.id";
    /// `actor.ip` (not scanned by detectors).
    pub const ACTOR_IP: &str = "actor.ip";
    /// `actor.session` (not scanned by detectors).
    pub const ACTOR_SESSION: &str = "actor.session";
    /// `gen_ai.conversation.id` (not scanned by detectors).
    pub const CONVERSATION_ID: &str = "gen_ai.conversation.id";
    /// `target.id`.
    pub const TARGET_ID: &str = "target.id";
    /// `error.message`.
    pub const ERROR_MESSAGE: &str = "error.message";
    /// `safety.block_reason`.
    pub const SAFETY_BLOCK_REASON: &str = "safety.block_reason";

    /// All of them, in the order [`Redactor`](super::Redactor) keeps their
    /// methods.
    pub(crate) const ALL: [&str; 7] = [
        ACTOR_ID,
        ACTOR_IP,
        ACTOR_SESSION,
        CONVERSATION_ID,
        TARGET_ID,
        ERROR_MESSAGE,
        SAFETY_BLOCK_REASON,
    ];
}

impl From<Method> for RedactionMethod {
    fn from(m: Method) -> Self {
        match m {
            Method::Drop => RedactionMethod::Drop,
            Method::Mask { .. } => RedactionMethod::Mask,
            Method::Hmac => RedactionMethod::Hmac,
            Method::Hash => RedactionMethod::Hash,
            Method::Encrypt => RedactionMethod::Encrypt,
            Method::Truncate { .. } => RedactionMethod::Truncate,
        }
    }
}

/// What became of one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redacted<'a> {
    /// Unchanged: the policy lets it pass and no detector matched. Borrowed
    /// from the input (until [`into_owned`](Self::into_owned)), so the common
    /// case does not allocate.
    Clear(Cow<'a, str>),
    /// Still text, but changed: masked, truncated, or with detector matches
    /// replaced.
    Replaced(String),
    /// Removed.
    Dropped,
    /// Replaced by a digest (HMAC-SHA256 or SHA-256).
    Digest(ContentDigest),
    /// Replaced by its AES-256-GCM encryption.
    Sealed(SealedContent),
}

impl Redacted<'_> {
    /// The value's text if it is still text (clear or replaced).
    pub fn text(&self) -> Option<&str> {
        match self {
            Redacted::Clear(s) => Some(s),
            Redacted::Replaced(s) => Some(s),
            _ => None,
        }
    }

    /// An owned copy that no longer borrows the input.
    pub fn into_owned(self) -> Redacted<'static> {
        match self {
            Redacted::Clear(s) => Redacted::Clear(Cow::Owned(s.into_owned())),
            Redacted::Replaced(s) => Redacted::Replaced(s),
            Redacted::Dropped => Redacted::Dropped,
            Redacted::Digest(d) => Redacted::Digest(d),
            Redacted::Sealed(s) => Redacted::Sealed(s),
        }
    }
}

/// One value after redaction, with a record of every redaction applied
/// (one per method application and one per detector match).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RedactedField<'a> {
    /// The result.
    pub value: Redacted<'a>,
    /// What was done; empty when the value passed unchanged.
    pub redactions: Vec<Redaction>,
}

impl<'a> RedactedField<'a> {
    fn clear(s: &'a str) -> Self {
        RedactedField {
            value: Redacted::Clear(Cow::Borrowed(s)),
            redactions: Vec::new(),
        }
    }

    /// Whether the value passed unchanged.
    pub fn is_clear(&self) -> bool {
        matches!(self.value, Redacted::Clear(_))
    }

    /// The value's text if it is still text (clear or replaced).
    pub fn text(&self) -> Option<&str> {
        self.value.text()
    }

    /// An owned copy that no longer borrows the input.
    pub fn into_owned(self) -> RedactedField<'static> {
        RedactedField {
            value: self.value.into_owned(),
            redactions: self.redactions,
        }
    }
}

/// A compiled policy with its keys. Cheap to share (`Arc<Redactor>`);
/// every method takes `&self` and is safe to call from many threads.
pub struct Redactor {
    policy: Policy,
    keys: Keys,
    rules: Vec<(Pattern, Method)>,
    content: PatternSet,
    allow: PatternSet,
    skip: PatternSet,
    fallback: Option<Method>,
    /// The enabled detectors, one bit each (see `detect::mask`).
    detectors_on: u16,
    detector_methods: [Method; DETECTOR_COUNT],
    /// [`method_for`](Self::method_for) each of [`field::ALL`], looked up
    /// once: every event has these fields, and matching their names against
    /// the policy's patterns each time was most of the typed fields' cost.
    typed_methods: [Option<Method>; 7],
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("policy", &self.policy)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// Compiles `policy` with `keys` (the policy's own `keys` section is not
    /// read; see [`from_policy`](Self::from_policy)). Fails if the policy is
    /// invalid, or uses `hmac` / `encrypt` without the keyring for it.
    pub fn new(policy: Policy, keys: Keys) -> Result<Self, PolicyError> {
        policy.validate()?;
        for (ring, purpose, path) in [
            (&keys.hmac, KeyPurpose::Hmac, "redaction.keys.hmac"),
            (
                &keys.encryption,
                KeyPurpose::Encryption,
                "redaction.keys.encryption",
            ),
        ] {
            if let Some(r) = ring
                && r.purpose() != purpose
            {
                return Err(PolicyError::KeyPurpose {
                    path: path.to_owned(),
                    expected: purpose,
                    found: r.purpose(),
                });
            }
        }
        for (path, method) in policy.methods() {
            let missing = match method {
                Method::Hmac if keys.hmac.is_none() => Some(KeyPurpose::Hmac),
                Method::Encrypt if keys.encryption.is_none() => Some(KeyPurpose::Encryption),
                _ => None,
            };
            if let Some(purpose) = missing {
                return Err(PolicyError::MissingKeyring {
                    path,
                    method,
                    purpose,
                });
            }
        }
        let detectors_on = detect::mask(
            Detector::ALL
                .into_iter()
                .filter(|&d| policy.detectors.enabled && policy.detectors.setting(d).enabled),
        );
        let mut detector_methods = [Method::MASK; DETECTOR_COUNT];
        for d in Detector::ALL {
            detector_methods[d.index()] = policy.detectors.method(d);
        }
        let mut redactor = Redactor {
            rules: policy
                .rules
                .iter()
                .map(|r| (Pattern::new(&r.field), r.method))
                .collect(),
            content: PatternSet::new(policy.content_fields.iter().map(String::as_str)),
            allow: PatternSet::new(policy.allow_fields.iter().map(String::as_str)),
            skip: PatternSet::new(policy.detectors.skip_fields.iter().map(String::as_str)),
            fallback: policy.fallback_method(),
            detectors_on,
            detector_methods,
            typed_methods: [None; 7],
            policy,
            keys,
        };
        redactor.typed_methods = field::ALL.map(|f| redactor.method_for(f));
        Ok(redactor)
    }

    /// Compiles `policy` with the keys its `keys` section names (loaded from
    /// the configuration, files or the environment).
    pub fn from_policy(policy: Policy) -> Result<Self, PolicyError> {
        let keys = policy.keys.load()?;
        Redactor::new(policy, keys)
    }

    /// The default policy with one HMAC key (at least 32 bytes).
    pub fn default_with_key(key_id: &str, hmac_key: &[u8]) -> Result<Self, PolicyError> {
        let ring = Keyring::hmac(key_id, hmac_key).map_err(|source| PolicyError::Key {
            path: "redaction.keys.hmac".to_owned(),
            source,
        })?;
        Redactor::new(Policy::default(), Keys::hmac(ring))
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The method the policy gives `field`, or `None` when its value passes
    /// (to the detectors).
    pub fn method_for(&self, field: &str) -> Option<Method> {
        if let Some((_, m)) = self.rules.iter().find(|(p, _)| p.matches(field)) {
            return Some(*m);
        }
        if self.content.matches(field) {
            return Some(self.policy.content_method);
        }
        if self.fallback.is_some() && self.allow.matches(field) {
            return None;
        }
        self.fallback
    }

    /// Whether the detectors run over `field`'s readable values: some are
    /// enabled and the policy does not skip the field.
    pub fn scans(&self, field: &str) -> bool {
        self.detectors_on != 0 && !self.skip.matches(field)
    }

    /// Whether any enabled detector could match in `value`: when false,
    /// [`scan_field`](Self::scan_field) would return it unchanged. A quick
    /// test (one pass over the bytes) for callers that keep the value
    /// themselves and want to skip building a result.
    pub fn may_detect(&self, value: &str) -> bool {
        detect::may_find(value, self.detectors_on)
    }

    /// [`may_detect`](Self::may_detect) for the `Display` text of a number
    /// (digits, at most one `.`, signs, an exponent, `inf`, `NaN`), without
    /// the pass over the bytes when the text is short. Such text has no `@`,
    /// no colon, no second dot and no run of dashes, so only eight digits
    /// or twelve characters could let a detector in: a count or a
    /// temperature, the numbers calls pass most, is never scanned.
    pub fn may_detect_number(&self, text: &str) -> bool {
        text.len() >= detect::MIN_NUMBER_FINDING && self.may_detect(text)
    }

    /// Redacts one named value by the policy: the field's method, then the
    /// detectors over whatever is still readable. Does not allocate when the
    /// value passes unchanged.
    pub fn redact_field<'a>(&self, field: &str, value: &'a str) -> RedactedField<'a> {
        self.redact_inner(field, value, true)
    }

    /// Runs only the detectors over `value` (unless the policy skips
    /// `field`): what [`redact_field`](Self::redact_field) does when
    /// [`method_for`](Self::method_for) says the field passes. For a caller
    /// that looked the method up already (and keeps it per field name).
    pub fn scan_field<'a>(&self, field: &str, value: &'a str) -> RedactedField<'a> {
        self.scan(field, Cow::Borrowed(value), Vec::new())
    }

    /// Redacts a value with a given method regardless of the policy (as
    /// `#[audit(redact(arg = "truncate(20)"))]` asks); text that stays
    /// readable is still scanned by the detectors.
    ///
    /// Never fails: if the method cannot be applied (no key for `hmac` or
    /// `encrypt`, value too large to seal, no randomness), the value is
    /// dropped and the record says `drop`. Use [`try_apply`](Self::try_apply)
    /// to see the error.
    pub fn apply<'a>(&self, field: &str, value: &'a str, method: &Method) -> RedactedField<'a> {
        self.apply_inner(field, value, method, true)
    }

    /// Applies `method` (as [`apply`](Self::apply)), then the policy for
    /// `field` to whatever is still readable: a name the policy redacts (a
    /// content field, or any name outside an allowlist) is redacted again,
    /// and the detectors scan what remains. This is what an explicit method
    /// from application code needs: `redact(prompt = "truncate(20)")` still
    /// leaves a prompt HMAC'd, and an allowlist still fails closed.
    ///
    /// ```
    /// use otel_audit_event::redact::{Method, Redacted, Redactor};
    /// let r = Redactor::default_with_key("k1", &[7u8; 32]).unwrap();
    /// let out = r.apply_then_policy("prompt", "tell me a story", &Method::Truncate { max_chars: 4 });
    /// assert!(matches!(out.value, Redacted::Digest(_)));
    /// assert_eq!(out.redactions.len(), 2); // truncate, then hmac
    /// ```
    pub fn apply_then_policy<'a>(
        &self,
        field: &str,
        value: &'a str,
        method: &Method,
    ) -> RedactedField<'a> {
        // The detectors run once, in the policy step, over the method's output.
        let first = self.apply_inner(field, value, method, false);
        let again = match first.text() {
            Some(text) => self.redact_inner(field, text, true).into_owned(),
            None => return first,
        };
        if again.is_clear() {
            return first;
        }
        let RedactedField { mut redactions, .. } = first;
        redactions.extend(again.redactions);
        RedactedField {
            value: again.value,
            redactions,
        }
    }

    /// Like [`apply`](Self::apply), but reports why a method could not be applied.
    pub fn try_apply<'a>(
        &self,
        field: &str,
        value: &'a str,
        method: &Method,
    ) -> Result<RedactedField<'a>, RedactError> {
        self.try_apply_inner(field, value, method, true)
    }

    fn redact_inner<'a>(&self, field: &str, value: &'a str, scan: bool) -> RedactedField<'a> {
        self.redact_with(field, value, self.method_for(field), scan)
    }

    fn redact_with<'a>(
        &self,
        field: &str,
        value: &'a str,
        method: Option<Method>,
        scan: bool,
    ) -> RedactedField<'a> {
        match method {
            Some(m) => self.apply_inner(field, value, &m, scan),
            None if scan => self.scan(field, Cow::Borrowed(value), Vec::new()),
            None => RedactedField::clear(value),
        }
    }

    fn apply_inner<'a>(
        &self,
        field: &str,
        value: &'a str,
        method: &Method,
        scan: bool,
    ) -> RedactedField<'a> {
        self.try_apply_inner(field, value, method, scan)
            .unwrap_or_else(|_| RedactedField {
                value: Redacted::Dropped,
                redactions: vec![record(field, RedactionMethod::Drop, None, None)],
            })
    }

    fn try_apply_inner<'a>(
        &self,
        field: &str,
        value: &'a str,
        method: &Method,
        scan: bool,
    ) -> Result<RedactedField<'a>, RedactError> {
        let one = |value, m: RedactionMethod, key_id: Option<&str>| RedactedField {
            value,
            redactions: vec![record(field, m, None, key_id)],
        };
        Ok(match *method {
            Method::Drop => one(Redacted::Dropped, RedactionMethod::Drop, None),
            Method::Hmac => {
                let ring = self.hmac_ring()?;
                let d = ring.digest(field, value.as_bytes())?;
                one(
                    Redacted::Digest(d),
                    RedactionMethod::Hmac,
                    Some(ring.active_id()),
                )
            }
            Method::Hash => one(
                Redacted::Digest(sha256_digest(field, value.as_bytes())),
                RedactionMethod::Hash,
                None,
            ),
            Method::Encrypt => {
                let ring = self
                    .keys
                    .encryption
                    .as_ref()
                    .ok_or(RedactError::NoKeyring {
                        purpose: KeyPurpose::Encryption,
                    })?;
                let sealed = ring.seal(field, value.as_bytes())?;
                one(
                    Redacted::Sealed(sealed),
                    RedactionMethod::Encrypt,
                    Some(ring.active_id()),
                )
            }
            Method::Mask { keep_chars } => {
                let text = mask(value, keep_chars as usize);
                let changed = matches!(text, Cow::Owned(_));
                self.after_text_method(field, text, changed, RedactionMethod::Mask, scan)
            }
            Method::Truncate { max_chars } => {
                let text = truncate_chars(value, max_chars as usize);
                let changed = text.len() < value.len();
                self.after_text_method(
                    field,
                    Cow::Borrowed(text),
                    changed,
                    RedactionMethod::Truncate,
                    scan,
                )
            }
        })
    }

    fn after_text_method<'a>(
        &self,
        field: &str,
        text: Cow<'a, str>,
        changed: bool,
        m: RedactionMethod,
        scan: bool,
    ) -> RedactedField<'a> {
        let (text, redactions) = if changed {
            (
                Cow::Owned(text.into_owned()),
                vec![record(field, m, None, None)],
            )
        } else {
            (text, Vec::new())
        };
        if scan {
            self.scan(field, text, redactions)
        } else {
            finish(text, redactions)
        }
    }

    fn hmac_ring(&self) -> Result<&Keyring, RedactError> {
        self.keys.hmac.as_ref().ok_or(RedactError::NoKeyring {
            purpose: KeyPurpose::Hmac,
        })
    }

    /// Runs the enabled detectors over `text` (unless `field` is skipped),
    /// replacing each match in place.
    fn scan<'a>(
        &self,
        field: &str,
        text: Cow<'a, str>,
        mut redactions: Vec<Redaction>,
    ) -> RedactedField<'a> {
        if !self.scans(field) {
            return finish(text, redactions);
        }
        let mut found = Vec::new();
        detect::find_into(&text, self.detectors_on, &mut found);
        if found.is_empty() {
            return finish(text, redactions);
        }
        let mut out = String::with_capacity(text.len() + 16 * found.len());
        let mut last = 0;
        for f in &found {
            out.push_str(&text[last..f.range.start]);
            let method = self.detector_methods[f.detector.index()];
            redactions.push(self.render_hit(&mut out, field, &text, f, method));
            last = f.range.end;
        }
        out.push_str(&text[last..]);
        finish(Cow::Owned(out), redactions)
    }

    /// Writes the replacement of one detector match and returns its record.
    /// Forms: `[email]` (drop), `[email:****.com]` (mask; secrets keep their
    /// type prefix, e.g. `[api_key:sk-proj-****]`),
    /// `[email:hmac-sha256:<key id>:<64 hex>]`, `[email:sha256:<64 hex>]`.
    fn render_hit(
        &self,
        out: &mut String,
        field: &str,
        text: &str,
        f: &Finding,
        method: Method,
    ) -> Redaction {
        let hit = &text[f.range.clone()];
        let name = f.detector.name();
        let rec = |m, key_id| {
            let mut r = record(field, m, None, key_id);
            r.detector = Some(name.to_owned());
            r
        };
        match method {
            Method::Mask { keep_chars } => {
                out.push('[');
                out.push_str(name);
                out.push(':');
                if let Some(h) = &f.hint {
                    out.push_str(&text[h.clone()]);
                    if f.detector == Detector::PrivateKey {
                        out.push(' ');
                    }
                }
                out.push_str("****");
                // the tail skips spaces, so `DE89 … 0130 00` ends `****3000`
                let chars: Vec<char> = hit.chars().filter(|c| *c != ' ').collect();
                let keep = (keep_chars as usize).min(chars.len() / 2);
                out.extend(&chars[chars.len() - keep..]);
                out.push(']');
                rec(RedactionMethod::Mask, None)
            }
            Method::Hmac => match self.keys.hmac.as_ref() {
                Some(ring) => {
                    let d = ring
                        .hmac_sha256(ring.active_id(), hit.as_bytes())
                        .expect("the active key is in the keyring");
                    let _ = write!(
                        out,
                        "[{name}:hmac-sha256:{}:{}]",
                        ring.active_id(),
                        hex::encode(d)
                    );
                    rec(RedactionMethod::Hmac, Some(ring.active_id()))
                }
                None => {
                    let _ = write!(out, "[{name}]");
                    rec(RedactionMethod::Drop, None)
                }
            },
            Method::Hash => {
                let d = sha256_digest(field, hit.as_bytes());
                let _ = write!(out, "[{name}:sha256:{}]", hex::encode(d.digest));
                rec(RedactionMethod::Hash, None)
            }
            // Validation rejects encrypt and truncate for detectors; drop is
            // the fail-closed reading of anything else.
            Method::Drop | Method::Encrypt | Method::Truncate { .. } => {
                let _ = write!(out, "[{name}]");
                rec(RedactionMethod::Drop, None)
            }
        }
    }

    /// Applies the policy to an event in place (server side, or the layer
    /// before export):
    ///
    /// * each attribute: content fields move to `content_digests` /
    ///   `sealed_content` and leave `attributes`; dropped ones are removed;
    ///   masked, truncated and detector-scanned ones are replaced;
    /// * the typed fields named in [`field`]: rules and the allowlist apply;
    ///   `target.id`, `error.message` and `safety.block_reason` are also
    ///   scanned by the detectors. A digest of a typed field is written inline
    ///   as `hmac-sha256:<key id>:<hex>` (or `sha256:<hex>`) so the column
    ///   stays filterable; a sealed one moves to `sealed_content`;
    /// * a `Redaction` is appended for each distinct (field, method,
    ///   detector, key id).
    ///
    /// Existing digests, sealed content and inline digests are left alone, so
    /// a second run changes nothing. Values are kept within the limits of
    /// [`AuditEvent::validate`] (over-long text is cut and recorded as
    /// `truncate`; when `content_digests` or `sealed_content` is full the
    /// value is dropped instead). At most [`MAX_LIST_ENTRIES`] redaction
    /// records are kept; the last one then has field `*`, standing for the rest.
    pub fn redact_event(&self, ev: &mut AuditEvent) {
        let mut changes: Vec<(String, RedactedField<'static>)> = Vec::new();
        for (k, v) in &ev.attributes {
            let r = self.redact_field(k, v);
            if r.is_clear() && v.len() <= MAX_ATTRIBUTE_VALUE_BYTES {
                continue;
            }
            changes.push((k.clone(), r.into_owned()));
        }
        for (k, r) in changes {
            self.store_attribute(ev, k, r);
        }
        self.redact_typed_fields(ev);
    }

    /// The second half of [`redact_event`](Self::redact_event): applies the
    /// policy to the typed fields named in [`field`] only, leaving
    /// `attributes` alone. For a producer whose attributes all went through
    /// [`redact_field`](Self::redact_field) (or [`apply`](Self::apply)
    /// followed by the policy) already, such as the in-process layer, which
    /// would otherwise scan every value twice.
    pub fn redact_typed_fields(&self, ev: &mut AuditEvent) {
        let AuditEvent {
            actor,
            target,
            error,
            safety,
            gen_ai,
            sealed_content,
            redactions,
            ..
        } = ev;
        let mut sink = Sink {
            sealed: sealed_content,
            redactions,
        };
        // In the order of `field::ALL`.
        let slots: [(&mut Option<String>, usize, bool); 7] = [
            (&mut actor.id, MAX_SHORT_BYTES, false),
            (&mut actor.ip, MAX_SHORT_BYTES, false),
            (&mut actor.session, MAX_SHORT_BYTES, false),
            (&mut gen_ai.conversation_id, MAX_SHORT_BYTES, false),
            (&mut target.id, MAX_SHORT_BYTES, true),
            (&mut error.message, MAX_MESSAGE_BYTES, true),
            (&mut safety.block_reason, MAX_MESSAGE_BYTES, true),
        ];
        for (i, (slot, max, scan)) in slots.into_iter().enumerate() {
            let method = self.typed_methods[i];
            self.redact_slot(field::ALL[i], method, slot, max, scan, &mut sink);
        }
    }

    /// Redacts `value` by the policy and stores the result in `ev` under
    /// attribute `key` (or in `content_digests` / `sealed_content`), with its
    /// redaction records. For the in-process layer.
    pub fn insert_attribute(&self, ev: &mut AuditEvent, key: &str, value: &str) {
        let r = self.redact_field(key, value);
        self.store_attribute(ev, key.to_owned(), r);
    }

    /// Like [`insert_attribute`](Self::insert_attribute) with a forced method
    /// (`#[audit(redact(arg = "..."))]`). Insert such attributes after any
    /// [`redact_event`](Self::redact_event) call, which would apply the
    /// policy to them again.
    pub fn insert_attribute_with(
        &self,
        ev: &mut AuditEvent,
        key: &str,
        value: &str,
        method: &Method,
    ) {
        let r = self.apply(key, value, method);
        self.store_attribute(ev, key.to_owned(), r);
    }

    fn store_attribute(&self, ev: &mut AuditEvent, key: String, r: RedactedField<'_>) {
        let RedactedField {
            value,
            mut redactions,
        } = r;
        match value {
            Redacted::Clear(s) => {
                let s = clamp(
                    s.into_owned(),
                    MAX_ATTRIBUTE_VALUE_BYTES,
                    &key,
                    &mut redactions,
                );
                ev.attributes.insert(key.clone(), s);
            }
            Redacted::Replaced(s) => {
                let s = clamp(s, MAX_ATTRIBUTE_VALUE_BYTES, &key, &mut redactions);
                ev.attributes.insert(key.clone(), s);
            }
            Redacted::Dropped => {
                ev.attributes.remove(&key);
            }
            Redacted::Digest(d) => {
                ev.attributes.remove(&key);
                if ev.content_digests.len() < MAX_LIST_ENTRIES {
                    ev.content_digests.push(d);
                } else {
                    redactions = vec![record(&key, RedactionMethod::Drop, None, None)];
                }
            }
            Redacted::Sealed(s) => {
                ev.attributes.remove(&key);
                if ev.sealed_content.len() < MAX_LIST_ENTRIES {
                    ev.sealed_content.push(s);
                } else {
                    redactions = vec![record(&key, RedactionMethod::Drop, None, None)];
                }
            }
        }
        for rec in redactions {
            push_redaction(&mut ev.redactions, rec);
        }
    }

    fn redact_slot(
        &self,
        name: &str,
        method: Option<Method>,
        slot: &mut Option<String>,
        max: usize,
        scan: bool,
        sink: &mut Sink<'_>,
    ) {
        let Some(v) = slot.as_deref() else {
            return;
        };
        if is_inline_digest(v) {
            return;
        }
        let r = self.redact_with(name, v, method, scan);
        if r.is_clear() && v.len() <= max {
            return;
        }
        let RedactedField {
            value,
            mut redactions,
        } = r.into_owned();
        *slot = match value {
            Redacted::Clear(s) => Some(clamp(s.into_owned(), max, name, &mut redactions)),
            Redacted::Replaced(s) => Some(clamp(s, max, name, &mut redactions)),
            Redacted::Dropped => None,
            Redacted::Digest(d) => Some(inline_digest(&d)),
            Redacted::Sealed(s) => {
                if sink.sealed.len() < MAX_LIST_ENTRIES {
                    sink.sealed.push(s);
                } else {
                    redactions = vec![record(name, RedactionMethod::Drop, None, None)];
                }
                None
            }
        };
        for rec in redactions {
            push_redaction(sink.redactions, rec);
        }
    }
}

struct Sink<'e> {
    sealed: &'e mut Vec<SealedContent>,
    redactions: &'e mut Vec<Redaction>,
}

fn finish<'a>(text: Cow<'a, str>, redactions: Vec<Redaction>) -> RedactedField<'a> {
    RedactedField {
        value: match text {
            Cow::Borrowed(s) => Redacted::Clear(Cow::Borrowed(s)),
            Cow::Owned(s) => Redacted::Replaced(s),
        },
        redactions,
    }
}

fn record(
    field: &str,
    method: RedactionMethod,
    detector: Option<&str>,
    key_id: Option<&str>,
) -> Redaction {
    Redaction {
        field: field.to_owned(),
        method,
        detector: detector.map(str::to_owned),
        key_id: key_id.map(str::to_owned),
    }
}

/// Appends a record unless an identical one is already there; keeps the list
/// within [`MAX_LIST_ENTRIES`] (the last slot becomes a `*` record).
fn push_redaction(list: &mut Vec<Redaction>, rec: Redaction) {
    if list.contains(&rec) {
        return;
    }
    if list.len() + 1 < MAX_LIST_ENTRIES {
        list.push(rec);
    } else if list.len() + 1 == MAX_LIST_ENTRIES {
        list.push(Redaction {
            field: "*".to_owned(),
            method: rec.method,
            detector: None,
            key_id: None,
        });
    }
}

/// `text` with every character but the last `keep` replaced by `*`, where
/// `keep` is at most half of the characters (rounded down), so no value is
/// ever shown in full. Borrowed when nothing changes (empty or all `*`).
pub(crate) fn mask(text: &str, keep: usize) -> Cow<'_, str> {
    let n = text.chars().count();
    let keep = keep.min(n / 2);
    let tail = last_chars(text, keep);
    let head = &text[..text.len() - tail.len()];
    if head.bytes().all(|b| b == b'*') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(n - keep + tail.len());
    out.extend(std::iter::repeat_n('*', n - keep));
    out.push_str(tail);
    Cow::Owned(out)
}

/// The last `n` characters of `s`.
fn last_chars(s: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    match s.char_indices().rev().nth(n - 1) {
        Some((i, _)) => &s[i..],
        None => s,
    }
}

/// The first `n` characters of `s`.
pub(crate) fn truncate_chars(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, recording a
/// `truncate` when it does.
fn clamp(mut s: String, max: usize, field: &str, redactions: &mut Vec<Redaction>) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        redactions.push(record(field, RedactionMethod::Truncate, None, None));
    }
    s
}

/// The inline text of a digest in a typed column: `hmac-sha256:<key id>:<hex>`
/// or `sha256:<hex>`.
pub fn inline_digest(d: &ContentDigest) -> String {
    let mut s = String::with_capacity(12 + MAX_KEY_ID_BYTES + 1 + 64);
    push_inline_digest(&mut s, d.algorithm, d.key_id.as_deref(), &d.digest);
    s
}

/// Appends the inline text of a digest (as [`inline_digest`] returns it) to
/// `s`: for a caller that keeps many texts in one buffer.
pub fn push_inline_digest(
    s: &mut String,
    algorithm: DigestAlgorithm,
    key_id: Option<&str>,
    digest: &[u8; 32],
) {
    // Built by hand: this runs for every digested value on the calling thread.
    match (algorithm, key_id) {
        (DigestAlgorithm::HmacSha256, Some(k)) => {
            s.push_str("hmac-sha256:");
            s.push_str(k);
            s.push(':');
        }
        _ => s.push_str("sha256:"),
    }
    push_hex(s, digest);
}

/// Appends `bytes` as lower-case hex.
pub(crate) fn push_hex(s: &mut String, bytes: &[u8]) {
    // Four bytes at a time as eight nibbles in the bytes of a u64, turned
    // into digits with a few word operations: this runs for every digest
    // on the calling thread, where a table lookup per nibble showed.
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let out = &mut buf[..2 * chunk.len()];
        let mut quads = chunk.chunks_exact(4);
        let mut at = 0;
        for q in quads.by_ref() {
            let word = u32::from_be_bytes(q.try_into().expect("four bytes"));
            out[at..at + 8].copy_from_slice(&hex_quad(word).to_be_bytes());
            at += 8;
        }
        for &b in quads.remainder() {
            let two = hex_quad(u32::from(b)).to_be_bytes();
            out[at..at + 2].copy_from_slice(&two[6..]);
            at += 2;
        }
        s.push_str(std::str::from_utf8(out).expect("hex digits are ASCII"));
    }
}

/// The eight lower-case hex digits of `v`, most significant first, as the
/// big-endian bytes of the result.
fn hex_quad(v: u32) -> u64 {
    let v = u64::from(v);
    // Spread the nibbles one per byte: 0x0a0b0c0d0e0f0g0h.
    let mut x = ((v & 0xffff_0000) << 16) | (v & 0xffff);
    x = ((x & 0x0000_ff00_0000_ff00) << 8) | (x & 0x0000_00ff_0000_00ff);
    x = ((x & 0x00f0_00f0_00f0_00f0) << 4) | (x & 0x000f_000f_000f_000f);
    // 1 in each byte whose nibble is 10 or more, which then needs 'a' - '0' - 10 more.
    let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    x + 0x3030_3030_3030_3030 + letters * 0x27
}

/// Whether `s` is an inline digest written by [`inline_digest`].
pub fn is_inline_digest(s: &str) -> bool {
    let hex64 =
        |h: &str| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if let Some(h) = s.strip_prefix("sha256:") {
        return hex64(h);
    }
    if let Some(rest) = s.strip_prefix("hmac-sha256:")
        && let Some((key_id, h)) = rest.split_once(':')
    {
        return check_key_id(key_id).is_ok() && hex64(h);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_and_complete() {
        for n in [0, 1, 3, 4, 5, 31, 32, 33, 64, 70, 256] {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 5) as u8).collect();
            let mut s = "x".to_owned();
            push_hex(&mut s, &bytes);
            let want: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(s, format!("x{want}"));
        }
    }
    use crate::model::Category;

    const KEY: [u8; 32] = [0x42; 32];

    fn redactor() -> Redactor {
        Redactor::default_with_key("k1", &KEY).unwrap()
    }

    fn with_policy(policy: Policy) -> Redactor {
        let keys = Keys::hmac(Keyring::hmac("k1", KEY).unwrap())
            .with_encryption(Keyring::encryption("e1", [7u8; 32]).unwrap());
        Redactor::new(policy, keys).unwrap()
    }

    fn event() -> AuditEvent {
        AuditEvent::new("acme", "svc", Category::Inference, "llm.chat")
    }

    /// The number shortcut answers exactly as the full quick test, for
    /// every kind of number text, short and long.
    #[test]
    fn the_number_shortcut_agrees_with_the_quick_test() {
        let r = redactor();
        let mut texts: Vec<String> = Vec::new();
        for shift in 0..64 {
            let v = 1u64 << shift;
            texts.extend([
                v.to_string(),
                (v - 1).to_string(),
                format!("-{v}"),
                format!("{}", v as f64 / 7.0),
                format!("{}", -(v as f64) * 1e-9),
            ]);
        }
        for f in [
            0.2f64,
            -0.0,
            1e-7,
            1e21,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
        ] {
            texts.push(f.to_string());
            texts.push((f as f32).to_string());
        }
        texts.extend([4111111111111111u64, 5551234567, 123456789].map(|n| n.to_string()));
        for t in &texts {
            assert_eq!(r.may_detect_number(t), r.may_detect(t), "{t}");
        }
        // Short numbers are never scanned; a card number passed as one is.
        assert!(!r.may_detect_number("512") && !r.may_detect_number("-0.125"));
        assert!(r.may_detect_number("4111111111111111"));
    }

    #[test]
    fn mask_counts_characters_and_never_shows_everything() {
        assert_eq!(mask("4111111111111111", 4), "************1111");
        assert_eq!(mask("1234", 4), "**34"); // at most half
        assert_eq!(mask("héllo wörld", 4), "*******örld");
        assert_eq!(mask("日本語テキスト", 2), "*****スト");
        assert_eq!(mask("abc", 0), "***");
        assert!(matches!(mask("", 4), Cow::Borrowed("")));
        assert!(matches!(mask("**34", 4), Cow::Borrowed(_)), "idempotent");
    }

    #[test]
    fn truncate_is_char_boundary_safe() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("日本語", 2), "日本");
        assert_eq!(truncate_chars("ab", 5), "ab");
        assert_eq!(truncate_chars("🎉🎉🎉", 1), "🎉");
    }

    #[test]
    fn every_method() {
        let r = with_policy(Policy::default());
        let f = "arg.card";
        let v = "4111111111111111";

        let out = r.apply(f, v, &Method::Drop);
        assert_eq!(out.value, Redacted::Dropped);
        assert_eq!(out.redactions[0].method, RedactionMethod::Drop);

        let out = r.apply(f, v, &Method::MASK);
        assert_eq!(out.text(), Some("************1111"));
        assert_eq!(out.redactions.len(), 1);
        assert_eq!(out.redactions[0].method, RedactionMethod::Mask);

        let out = r.apply(f, v, &Method::Hmac);
        let Redacted::Digest(d) = &out.value else {
            panic!("{out:?}")
        };
        assert_eq!(d.algorithm, DigestAlgorithm::HmacSha256);
        assert_eq!(d.key_id.as_deref(), Some("k1"));
        assert_eq!(d.field, f);
        assert_eq!(out.redactions[0].key_id.as_deref(), Some("k1"));
        let ring = Keyring::hmac("k1", KEY).unwrap();
        assert_eq!(d.digest, ring.hmac_sha256("k1", v.as_bytes()).unwrap());

        let out = r.apply(f, v, &Method::Hash);
        let Redacted::Digest(d) = &out.value else {
            panic!("{out:?}")
        };
        assert_eq!(d.algorithm, DigestAlgorithm::Sha256);
        assert_eq!(d.key_id, None);
        assert_eq!(
            hex::encode(d.digest),
            "9bbef19476623ca56c17da75fd57734dbf82530686043a6e491c6d71befe8f6e"
        );

        let out = r.apply(f, v, &Method::Encrypt);
        let Redacted::Sealed(s) = &out.value else {
            panic!("{out:?}")
        };
        assert_eq!(s.key_id, "e1");
        assert_eq!(out.redactions[0].method, RedactionMethod::Encrypt);
        let ring = r.keys().encryption.as_ref().unwrap();
        assert_eq!(decrypt(s, ring).unwrap(), v.as_bytes());

        let out = r.apply(
            "arg.note",
            "a long note about nothing",
            &Method::Truncate { max_chars: 6 },
        );
        assert_eq!(out.text(), Some("a long"));
        assert_eq!(out.redactions[0].method, RedactionMethod::Truncate);
        let out = r.apply("arg.note", "short", &Method::Truncate { max_chars: 6 });
        assert!(out.is_clear() && out.redactions.is_empty());
    }

    #[test]
    fn kept_text_is_still_scanned() {
        let r = redactor();
        let out = r.apply(
            "arg.q",
            "mail bob@example.org about it",
            &Method::Truncate { max_chars: 20 },
        );
        assert_eq!(out.text(), Some("mail [email:****.org]"));
        let methods: Vec<_> = out
            .redactions
            .iter()
            .map(|x| (x.method, x.detector.clone()))
            .collect();
        assert_eq!(
            methods,
            [
                (RedactionMethod::Truncate, None),
                (RedactionMethod::Mask, Some("email".to_owned()))
            ]
        );
    }

    #[test]
    fn apply_fails_closed_without_keys() {
        let r = redactor(); // no encryption keys
        let out = r.apply("arg.ssn", "123-45-6789", &Method::Encrypt);
        assert_eq!(out.value, Redacted::Dropped);
        assert_eq!(out.redactions[0].method, RedactionMethod::Drop);
        assert!(matches!(
            r.try_apply("arg.ssn", "123-45-6789", &Method::Encrypt),
            Err(RedactError::NoKeyring {
                purpose: KeyPurpose::Encryption
            })
        ));
    }

    #[test]
    fn new_checks_keyrings() {
        let mut policy = Policy::default();
        policy.rules.push(Rule::new("x", Method::Hash));
        policy.rules.push(Rule::new("secret.*", Method::Encrypt));
        let err = Redactor::new(policy, Keys::hmac(Keyring::hmac("k1", KEY).unwrap())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "redaction.rules[1].method: method encrypt needs encryption keys (redaction.keys.encryption)"
        );
        let err = Redactor::new(Policy::default(), Keys::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("redaction.content_method: method hmac needs hmac keys"),
            "{err}"
        );
        let wrong = Keys::hmac(Keyring::encryption("e", [1u8; 32]).unwrap());
        assert!(matches!(
            Redactor::new(Policy::default(), wrong),
            Err(PolicyError::KeyPurpose { .. })
        ));
        // a policy that needs no keys
        let p = Policy {
            content_method: Method::Drop,
            ..Policy::default()
        };
        Redactor::new(p, Keys::default()).unwrap();
    }

    #[test]
    fn clear_values_are_borrowed() {
        let r = redactor();
        let v = String::from("GET /v1/models 200");
        let out = r.redact_field("http.summary", &v);
        match out.value {
            Redacted::Clear(Cow::Borrowed(s)) => assert!(std::ptr::eq(s, v.as_str())),
            other => panic!("{other:?}"),
        }
        assert!(out.redactions.is_empty());
    }

    #[test]
    fn precedence_rule_content_allow() {
        let mut p = Policy::allowlist(["model", "gen_ai.*"]);
        p.rules.push(Rule::new("gen_ai.prompt", Method::Encrypt));
        let r = with_policy(p);
        assert_eq!(r.method_for("gen_ai.prompt"), Some(Method::Encrypt)); // rule first
        assert_eq!(r.method_for("gen_ai.input.messages"), Some(Method::Hmac)); // content beats allow
        assert_eq!(r.method_for("gen_ai.request.model"), None); // allowed
        assert_eq!(r.method_for("Model"), None); // case-insensitive
        assert_eq!(r.method_for("user.name"), Some(Method::Hmac)); // fail closed
        let d = with_policy(Policy::default());
        assert_eq!(d.method_for("user.name"), None);
        assert_eq!(d.method_for("arg.prompt"), Some(Method::Hmac));
        assert_eq!(d.method_for("gen_ai.usage.input_tokens"), None);
    }

    #[test]
    fn detectors_can_be_configured() {
        let mut p = Policy::default();
        p.detectors.email.method = Some(Method::Hmac);
        p.detectors.phone.method = Some(Method::Drop);
        p.detectors.ip_address.enabled = false;
        p.detectors.payment_card.method = Some(Method::Hash);
        p.detectors.skip_fields.push("build.*".into());
        let r = with_policy(p);
        let out = r.redact_field("msg", "a@b.io +44 20 7946 0958 10.1.2.3 4111111111111111");
        let ring = Keyring::hmac("k1", KEY).unwrap();
        let h = hex::encode(ring.hmac_sha256("k1", b"a@b.io").unwrap());
        let c = hex::encode(sha256_digest("", b"4111111111111111").digest);
        assert_eq!(
            out.text().unwrap(),
            format!("[email:hmac-sha256:k1:{h}] [phone] 10.1.2.3 [payment_card:sha256:{c}]")
        );
        assert_eq!(out.redactions[0].key_id.as_deref(), Some("k1"));
        assert!(r.redact_field("build.id", "a@b.io").is_clear());
        let mut p = Policy::default();
        p.detectors.enabled = false;
        assert!(with_policy(p).redact_field("msg", "a@b.io").is_clear());
    }

    #[test]
    fn redact_event_routes_and_is_idempotent() {
        let mut p = Policy::default();
        p.rules
            .push(Rule::new("http.request.header.*", Method::Drop));
        p.rules
            .push(Rule::new("gen_ai.output.messages", Method::Encrypt));
        p.rules.push(Rule::new("actor.id", Method::Hmac));
        p.rules
            .push(Rule::new("user.phone", Method::Mask { keep_chars: 2 }));
        let r = with_policy(p);
        let mut ev = event();
        ev.actor.id = Some("alice@example.com".into());
        ev.actor.ip = Some("203.0.113.9".into());
        ev.target.id = Some("ticket/bob@example.org".into());
        ev.error.message = Some("card 4111 1111 1111 1111 declined".into());
        ev.safety.block_reason = Some("SSN 123-45-6789 in prompt".into());
        let a = &mut ev.attributes;
        a.insert(
            "gen_ai.input.messages".into(),
            "[{\"role\":\"user\"}]".into(),
        );
        a.insert("gen_ai.output.messages".into(), "the answer".into());
        a.insert(
            "http.request.header.authorization".into(),
            "Bearer x".into(),
        );
        a.insert("user.phone".into(), "5551234".into());
        a.insert("note".into(), "call +1 555 123 4567".into());
        a.insert("http.route".into(), "/v1/chat".into());
        r.redact_event(&mut ev);
        ev.validate().unwrap();

        assert_eq!(ev.attributes.len(), 3, "{:?}", ev.attributes);
        assert_eq!(ev.attributes["http.route"], "/v1/chat");
        assert_eq!(ev.attributes["user.phone"], "*****34");
        assert_eq!(ev.attributes["note"], "call [phone:****4567]");
        assert_eq!(ev.content_digests.len(), 1);
        assert_eq!(ev.content_digests[0].field, "gen_ai.input.messages");
        assert_eq!(ev.sealed_content.len(), 1);
        assert_eq!(ev.sealed_content[0].field, "gen_ai.output.messages");
        let id = ev.actor.id.clone().unwrap();
        assert!(is_inline_digest(&id), "{id}");
        let ring = Keyring::hmac("k1", KEY).unwrap();
        assert!(id.ends_with(&hex::encode(
            ring.hmac_sha256("k1", b"alice@example.com").unwrap()
        )));
        assert_eq!(ev.actor.ip.as_deref(), Some("203.0.113.9")); // identity column, no rule
        assert_eq!(ev.target.id.as_deref(), Some("ticket/[email:****.org]"));
        assert_eq!(
            ev.error.message.as_deref(),
            Some("card [payment_card:****1111] declined")
        );
        assert_eq!(
            ev.safety.block_reason.as_deref(),
            Some("SSN [us_ssn:****6789] in prompt")
        );
        let fields: Vec<_> = ev.redactions.iter().map(|x| x.field.as_str()).collect();
        for f in [
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "http.request.header.authorization",
            "user.phone",
            "note",
            "actor.id",
            "target.id",
            "error.message",
            "safety.block_reason",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }

        let once = ev.clone();
        r.redact_event(&mut ev);
        assert_eq!(ev, once, "a second run changes nothing");
    }

    #[test]
    fn allowlist_fails_closed_on_typed_fields() {
        let r = with_policy(Policy::allowlist(["http.route", "actor.ip"]));
        let mut ev = event();
        ev.actor.id = Some("user-17".into());
        ev.actor.ip = Some("10.0.0.1".into());
        ev.error.message = Some("boom".into());
        ev.attributes.insert("http.route".into(), "/x".into());
        ev.attributes
            .insert("user.name".into(), "Alice Smith".into());
        r.redact_event(&mut ev);
        ev.validate().unwrap();
        assert!(ev.actor.id.as_deref().is_some_and(is_inline_digest));
        assert!(ev.error.message.as_deref().is_some_and(is_inline_digest));
        assert_eq!(ev.actor.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(ev.attributes.len(), 1);
        assert_eq!(ev.content_digests[0].field, "user.name");
        let once = ev.clone();
        r.redact_event(&mut ev);
        assert_eq!(ev, once);
    }

    #[test]
    fn typed_fields_take_the_method_their_name_has() {
        let mut rules = Policy::default();
        rules.rules.push(Rule::new("actor.*", Method::Drop));
        rules.rules.push(Rule::new(
            "safety.block_reason",
            Method::Truncate { max_chars: 3 },
        ));
        for policy in [
            Policy::default(),
            rules,
            Policy::allowlist(["actor.ip", "error.*"]),
        ] {
            let r = with_policy(policy);
            let methods: Vec<_> = field::ALL.iter().map(|f| r.method_for(f)).collect();
            assert_eq!(r.typed_methods.to_vec(), methods);
        }
        let mut ev = event();
        ev.safety.block_reason = Some("jailbreak".into());
        ev.actor.session = Some("s-1".into());
        let mut p = Policy::default();
        p.rules.push(Rule::new(
            "safety.block_reason",
            Method::Truncate { max_chars: 4 },
        ));
        with_policy(p).redact_event(&mut ev);
        assert_eq!(ev.safety.block_reason.as_deref(), Some("jail"));
        assert_eq!(ev.actor.session.as_deref(), Some("s-1"));
    }

    #[test]
    fn limits_are_kept() {
        let r = redactor();
        let mut ev = event();
        // replacements are longer than what they replace
        ev.error.message = Some("a@b.io ".repeat(MAX_MESSAGE_BYTES / 7));
        ev.target.id = Some("x".repeat(MAX_SHORT_BYTES + 10));
        ev.attributes
            .insert("big".into(), "é".repeat(MAX_ATTRIBUTE_VALUE_BYTES));
        for i in 0..254 {
            ev.attributes
                .insert(format!("a{i:03}"), format!("mail u{i}@example.com"));
        }
        r.redact_event(&mut ev);
        ev.validate().unwrap();
        assert!(ev.error.message.as_ref().unwrap().len() <= MAX_MESSAGE_BYTES);
        assert_eq!(ev.target.id.as_ref().unwrap().len(), MAX_SHORT_BYTES);
        assert!(ev.attributes["big"].len() <= MAX_ATTRIBUTE_VALUE_BYTES);
        assert_eq!(ev.redactions.len(), MAX_LIST_ENTRIES);
        assert_eq!(ev.redactions.last().unwrap().field, "*");
    }

    #[test]
    fn redactor_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Redactor>();
        assert_send_sync::<Keyring>();
    }

    #[test]
    fn inline_digests() {
        let ring = Keyring::hmac("k-1", KEY).unwrap();
        let d = ring.digest("actor.id", b"u").unwrap();
        let s = inline_digest(&d);
        assert!(s.starts_with("hmac-sha256:k-1:") && is_inline_digest(&s));
        assert!(is_inline_digest(&inline_digest(&sha256_digest("f", b"u"))));
        assert!(!is_inline_digest("sha256:abc"));
        assert!(!is_inline_digest("hmac-sha256:bad id:00"));
    }
}
