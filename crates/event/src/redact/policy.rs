//! The redaction policy: serde structs loaded from YAML, with validation whose
//! errors name the field path (`redaction.rules[2].method: ...`).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use super::detect::Detector;
use super::error::{KeyError, PolicyError};
use super::keys::{KeyPurpose, Keyring, Keys, check_key_id};
use super::method::{METHOD_SYNTAX, Method, parse_method};
use super::pattern::check_pattern;
use super::sensitive::Sensitive;

/// Fields whose values are prompts, completions, messages or tool payloads:
/// the default `content_fields`. They are replaced by an HMAC digest.
pub const DEFAULT_CONTENT_FIELDS: &[&str] = &[
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.prompt",
    "gen_ai.completion",
    // OpenInference (Arize/Phoenix) content, and log bodies and span-event
    // content of older GenAI instrumentations as the collector maps them.
    "input.value",
    "output.value",
    "log.body",
    "content",
    "*.content",
    "prompt",
    "input",
    "output",
    "messages",
    "query",
    "completion",
    "response",
    "*.prompt",
    "*.input",
    "*.output",
    "*.messages",
    "*.query",
    "*.completion",
    "*.response",
];

impl Serialize for Method {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Method;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a redaction method: {METHOD_SYNTAX}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Method, E> {
                parse_method(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// How fields that no rule names are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Content fields are digested, detectors mask what they find, and every
    /// other value passes.
    #[default]
    Denylist,
    /// Fail closed: only `allow_fields` pass in clear (still scanned by the
    /// detectors); every other value gets `default_method` (HMAC unless set).
    Allowlist,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Denylist => "denylist",
            Mode::Allowlist => "allowlist",
        })
    }
}

/// A file holding a policy: `redaction:` at the top level, as in the
/// collector's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// The policy.
    pub redaction: Policy,
}

/// A redaction policy (the `redaction:` section of a configuration file).
///
/// Each value is decided in this order: the first matching `rules` entry;
/// else `content_fields` → `content_method`; else, in allowlist mode,
/// `allow_fields` → clear or `default_method`; else clear. Whatever stays
/// readable (clear, masked, truncated) is then scanned by the detectors.
///
/// ```
/// use otel_audit_event::redact::{Method, Policy};
/// let policy = Policy::from_yaml(r#"
/// redaction:
///   rules:
///     - field: "http.request.header.*"
///       method: drop
///     - field: user.card_last4
///       method: mask(2)
///   detectors:
///     ip_address: { enabled: false }
/// "#)?;
/// assert_eq!(policy.rules[1].method, Method::Mask { keep_chars: 2 });
/// # Ok::<(), otel_audit_event::redact::PolicyError>(())
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// `denylist` (default) or `allowlist` (fail closed).
    pub mode: Mode,
    /// Ordered rules; the first whose `field` pattern matches decides the
    /// method, before `content_fields` and `allow_fields`.
    pub rules: Vec<Rule>,
    /// Field patterns holding prompts, completions and other content. Replaces
    /// the default list ([`DEFAULT_CONTENT_FIELDS`]) when given.
    pub content_fields: Vec<String>,
    /// The method for `content_fields`; default `hmac`.
    pub content_method: Method,
    /// Allowlist mode only: field patterns that pass in clear.
    pub allow_fields: Vec<String>,
    /// Allowlist mode only: the method for every field not allowed; default `hmac`.
    pub default_method: Option<Method>,
    /// The detectors run over readable text.
    pub detectors: DetectorsConfig,
    /// Where the HMAC and encryption keys come from.
    pub keys: KeysConfig,
}

impl Default for Policy {
    /// The default policy: content fields are HMAC'd, detectors mask, everything
    /// else passes.
    fn default() -> Self {
        Policy {
            mode: Mode::Denylist,
            rules: Vec::new(),
            content_fields: DEFAULT_CONTENT_FIELDS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            content_method: Method::Hmac,
            allow_fields: Vec::new(),
            default_method: None,
            detectors: DetectorsConfig::default(),
            keys: KeysConfig::default(),
        }
    }
}

/// One rule: a field pattern and the method for values of matching fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// An exact field name or a `*` glob (`http.request.header.*`); ASCII
    /// case-insensitive. `*` matches any characters, dots included.
    pub field: String,
    /// `drop`, `mask`, `mask(N)`, `hmac`, `hash`, `encrypt` or `truncate(N)`;
    /// `N` counts characters.
    pub method: Method,
}

impl Rule {
    /// A rule.
    pub fn new(field: impl Into<String>, method: Method) -> Self {
        Rule {
            field: field.into(),
            method,
        }
    }
}

/// One detector's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSetting {
    /// Whether the detector runs; default `true`.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What replaces a match: `drop`, `mask(N)`, `hmac` or `hash`. Default
    /// `mask(4)`, and `mask(0)` for `api_key`, `jwt` and `private_key`.
    #[serde(default)]
    pub method: Option<Method>,
}

fn yes() -> bool {
    true
}

impl Default for DetectorSetting {
    fn default() -> Self {
        DetectorSetting {
            enabled: true,
            method: None,
        }
    }
}

/// The detectors' settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorsConfig {
    /// Master switch; default `true`.
    pub enabled: bool,
    /// Field patterns the detectors never scan (values known to be safe that
    /// look sensitive, such as build ids).
    pub skip_fields: Vec<String>,
    /// E-mail addresses.
    pub email: DetectorSetting,
    /// Telephone numbers.
    pub phone: DetectorSetting,
    /// Payment card numbers (Luhn checked).
    pub payment_card: DetectorSetting,
    /// US social security numbers.
    pub us_ssn: DetectorSetting,
    /// IPv4 and IPv6 addresses.
    pub ip_address: DetectorSetting,
    /// JSON Web Tokens.
    pub jwt: DetectorSetting,
    /// API keys and access tokens with a known prefix.
    pub api_key: DetectorSetting,
    /// PEM private key blocks.
    pub private_key: DetectorSetting,
    /// IBANs (mod-97 checked).
    pub iban: DetectorSetting,
}

impl Default for DetectorsConfig {
    fn default() -> Self {
        DetectorsConfig {
            enabled: true,
            skip_fields: Vec::new(),
            email: DetectorSetting::default(),
            phone: DetectorSetting::default(),
            payment_card: DetectorSetting::default(),
            us_ssn: DetectorSetting::default(),
            ip_address: DetectorSetting::default(),
            jwt: DetectorSetting::default(),
            api_key: DetectorSetting::default(),
            private_key: DetectorSetting::default(),
            iban: DetectorSetting::default(),
        }
    }
}

impl DetectorsConfig {
    /// The settings of one detector.
    pub fn setting(&self, d: Detector) -> &DetectorSetting {
        match d {
            Detector::PrivateKey => &self.private_key,
            Detector::Jwt => &self.jwt,
            Detector::ApiKey => &self.api_key,
            Detector::Email => &self.email,
            Detector::Iban => &self.iban,
            Detector::PaymentCard => &self.payment_card,
            Detector::UsSsn => &self.us_ssn,
            Detector::IpAddress => &self.ip_address,
            Detector::Phone => &self.phone,
        }
    }

    /// The settings of one detector, mutably.
    pub fn setting_mut(&mut self, d: Detector) -> &mut DetectorSetting {
        match d {
            Detector::PrivateKey => &mut self.private_key,
            Detector::Jwt => &mut self.jwt,
            Detector::ApiKey => &mut self.api_key,
            Detector::Email => &mut self.email,
            Detector::Iban => &mut self.iban,
            Detector::PaymentCard => &mut self.payment_card,
            Detector::UsSsn => &mut self.us_ssn,
            Detector::IpAddress => &mut self.ip_address,
            Detector::Phone => &mut self.phone,
        }
    }

    /// The method applied to a detector's matches.
    pub fn method(&self, d: Detector) -> Method {
        self.setting(d).method.unwrap_or(if d.is_secret() {
            Method::Mask { keep_chars: 0 }
        } else {
            Method::MASK
        })
    }
}

/// How `key_file` and `key_env` content is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEncoding {
    /// Hexadecimal digits (default). Surrounding whitespace is ignored.
    #[default]
    Hex,
    /// Base64, standard or URL-safe alphabet, padded or not. Surrounding
    /// whitespace is ignored.
    Base64,
    /// The bytes as they are (files only make sense here).
    Raw,
}

impl fmt::Display for KeyEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyEncoding::Hex => "hex",
            KeyEncoding::Base64 => "base64",
            KeyEncoding::Raw => "raw",
        })
    }
}

/// Where keys come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// HMAC-SHA256 keys (each at least 32 bytes).
    pub hmac: Option<KeyringConfig>,
    /// AES-256-GCM keys (each exactly 32 bytes).
    pub encryption: Option<KeyringConfig>,
}

/// One keyring: the active key and every key still needed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringConfig {
    /// The id of the key used for new data.
    pub active: String,
    /// Every key: the active one and retired ones kept for verification and
    /// decryption.
    pub keys: Vec<KeyConfig>,
}

/// One key. Exactly one of `key_hex`, `key_base64`, `key_file`, `key_env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// The key id stored with every digest and sealed value (1–64 of
    /// `[A-Za-z0-9._-]`).
    pub id: String,
    /// The key inline, in hex. Prefer `key_env` or `key_file` outside tests.
    #[serde(default)]
    pub key_hex: Option<Sensitive<String>>,
    /// The key inline, in base64.
    #[serde(default)]
    pub key_base64: Option<Sensitive<String>>,
    /// A file holding the key, encoded as `encoding` says.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name of an environment variable holding the key, encoded as
    /// `encoding` says (e.g. `OTEL_AUDIT_HMAC_KEY`).
    #[serde(default)]
    pub key_env: Option<String>,
    /// The encoding of `key_file` / `key_env` content: `hex` (default),
    /// `base64` or `raw`.
    #[serde(default)]
    pub encoding: Option<KeyEncoding>,
}

impl KeyConfig {
    fn source_count(&self) -> usize {
        usize::from(self.key_hex.is_some())
            + usize::from(self.key_base64.is_some())
            + usize::from(self.key_file.is_some())
            + usize::from(self.key_env.is_some())
    }

    fn validate(&self) -> Result<(), KeyError> {
        check_key_id(&self.id)?;
        let count = self.source_count();
        if count != 1 {
            return Err(KeyError::Source {
                key_id: self.id.clone(),
                count,
            });
        }
        if self.encoding.is_some() && (self.key_hex.is_some() || self.key_base64.is_some()) {
            return Err(KeyError::EncodingWithInlineKey {
                key_id: self.id.clone(),
            });
        }
        if let Some(var) = &self.key_env {
            let b = var.as_bytes();
            let ok = !b.is_empty()
                && !b[0].is_ascii_digit()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
            if !ok {
                return Err(KeyError::InvalidEnvName {
                    key_id: self.id.clone(),
                    var: var.chars().take(64).collect(),
                });
            }
        }
        Ok(())
    }

    /// Reads and decodes the key's bytes.
    pub fn load(&self) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        self.validate()?;
        let id = || self.id.clone();
        if let Some(hex) = &self.key_hex {
            return decode(hex.expose(), KeyEncoding::Hex, &self.id);
        }
        if let Some(b64) = &self.key_base64 {
            return decode(b64.expose(), KeyEncoding::Base64, &self.id);
        }
        let encoding = self.encoding.unwrap_or_default();
        if let Some(path) = &self.key_file {
            let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::File {
                key_id: id(),
                path: path.clone(),
                source,
            })?);
            if encoding == KeyEncoding::Raw {
                return Ok(bytes);
            }
            let text = std::str::from_utf8(&bytes).map_err(|_| KeyError::Decode {
                key_id: id(),
                encoding,
            })?;
            return decode(text, encoding, &self.id);
        }
        if let Some(var) = &self.key_env {
            let text = Zeroizing::new(std::env::var(var).map_err(|e| match e {
                std::env::VarError::NotPresent => KeyError::EnvMissing {
                    key_id: id(),
                    var: var.clone(),
                },
                std::env::VarError::NotUnicode(_) => KeyError::EnvNotUnicode {
                    key_id: id(),
                    var: var.clone(),
                },
            })?);
            if encoding == KeyEncoding::Raw {
                return Ok(Zeroizing::new(text.as_bytes().to_vec()));
            }
            return decode(&text, encoding, &self.id);
        }
        unreachable!("validate() checked that exactly one source is set")
    }
}

fn decode(text: &str, encoding: KeyEncoding, key_id: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let text = text.trim();
    let err = || KeyError::Decode {
        key_id: key_id.to_owned(),
        encoding,
    };
    match encoding {
        KeyEncoding::Hex => hex::decode(text).map(Zeroizing::new).map_err(|_| err()),
        KeyEncoding::Base64 => {
            use base64::engine::general_purpose::{
                STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
            };
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|e| e.decode(text).ok())
                .map(Zeroizing::new)
                .ok_or_else(err)
        }
        KeyEncoding::Raw => Ok(Zeroizing::new(text.as_bytes().to_vec())),
    }
}

impl KeyringConfig {
    fn validate(&self, path: &str) -> Result<(), PolicyError> {
        let key_err = |p: String, source| PolicyError::Key { path: p, source };
        check_key_id(&self.active).map_err(|e| key_err(format!("{path}.active"), e))?;
        for (i, k) in self.keys.iter().enumerate() {
            let p = format!("{path}.keys[{i}]");
            k.validate().map_err(|e| key_err(p.clone(), e))?;
            if self.keys[..i].iter().any(|o| o.id == k.id) {
                return Err(key_err(
                    p,
                    KeyError::Duplicate {
                        key_id: k.id.clone(),
                    },
                ));
            }
        }
        if !self.keys.iter().any(|k| k.id == self.active) {
            return Err(key_err(
                format!("{path}.active"),
                KeyError::UnknownActive {
                    key_id: self.active.clone(),
                },
            ));
        }
        Ok(())
    }

    fn load(&self, path: &str, purpose: KeyPurpose) -> Result<Keyring, PolicyError> {
        self.validate(path)?;
        let key_err = |p: String, source| PolicyError::Key { path: p, source };
        let (ai, active) = self
            .keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.id == self.active)
            .expect("validate() checked the active key is listed");
        let p = |i: usize| format!("{path}.keys[{i}]");
        let bytes = active.load().map_err(|e| key_err(p(ai), e))?;
        let mut ring = Keyring::new(purpose, active.id.clone(), bytes.to_vec())
            .map_err(|e| key_err(p(ai), e))?;
        for (i, k) in self.keys.iter().enumerate() {
            if i == ai {
                continue;
            }
            let bytes = k.load().map_err(|e| key_err(p(i), e))?;
            ring.add(k.id.clone(), bytes.to_vec())
                .map_err(|e| key_err(p(i), e))?;
        }
        Ok(ring)
    }
}

impl KeysConfig {
    fn validate(&self, path: &str) -> Result<(), PolicyError> {
        if let Some(h) = &self.hmac {
            h.validate(&format!("{path}.hmac"))?;
        }
        if let Some(e) = &self.encryption {
            e.validate(&format!("{path}.encryption"))?;
        }
        Ok(())
    }

    /// Loads every configured key (from the config, files or the environment).
    /// Errors name the key's place and id, never its bytes.
    pub fn load(&self) -> Result<Keys, PolicyError> {
        Ok(Keys {
            hmac: self
                .hmac
                .as_ref()
                .map(|c| c.load("redaction.keys.hmac", KeyPurpose::Hmac))
                .transpose()?,
            encryption: self
                .encryption
                .as_ref()
                .map(|c| c.load("redaction.keys.encryption", KeyPurpose::Encryption))
                .transpose()?,
        })
    }
}

fn check_patterns(path: &str, patterns: &[String]) -> Result<(), PolicyError> {
    for (i, p) in patterns.iter().enumerate() {
        let here = format!("{path}[{i}]");
        check_pattern(p).map_err(|reason| PolicyError::Pattern {
            path: here.clone(),
            pattern: p.chars().take(64).collect(),
            reason,
        })?;
        if let Some(j) = patterns[..i].iter().position(|o| o.eq_ignore_ascii_case(p)) {
            return Err(PolicyError::DuplicatePattern {
                path: here,
                pattern: p.clone(),
                first: format!("{path}[{j}]"),
            });
        }
    }
    Ok(())
}

impl Policy {
    /// The default policy in allowlist mode: only `allow_fields` pass in
    /// clear; every other value is HMAC'd.
    pub fn allowlist<S: Into<String>>(allow_fields: impl IntoIterator<Item = S>) -> Self {
        Policy {
            mode: Mode::Allowlist,
            allow_fields: allow_fields.into_iter().map(Into::into).collect(),
            ..Policy::default()
        }
    }

    /// Parses a YAML document with the policy under `redaction:` and validates it.
    pub fn from_yaml(text: &str) -> Result<Self, PolicyError> {
        let doc: PolicyDocument =
            serde_norway::from_str(text).map_err(|source| PolicyError::Yaml { source })?;
        doc.redaction.validate()?;
        Ok(doc.redaction)
    }

    /// Reads, parses and validates a YAML policy file.
    pub fn from_yaml_file(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::from_yaml(&text)
    }

    /// The method used for values no rule, content or allow pattern matches:
    /// `None` (clear) in denylist mode.
    pub fn fallback_method(&self) -> Option<Method> {
        match self.mode {
            Mode::Denylist => None,
            Mode::Allowlist => Some(self.default_method.unwrap_or(Method::Hmac)),
        }
    }

    /// Every method the policy can apply, with the place that sets it.
    pub(crate) fn methods(&self) -> Vec<(String, Method)> {
        let mut out = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            out.push((format!("redaction.rules[{i}].method"), r.method));
        }
        if !self.content_fields.is_empty() {
            out.push(("redaction.content_method".to_owned(), self.content_method));
        }
        if let Some(m) = self.fallback_method() {
            out.push(("redaction.default_method".to_owned(), m));
        }
        if self.detectors.enabled {
            for d in Detector::ALL {
                if self.detectors.setting(d).enabled {
                    out.push((
                        format!("redaction.detectors.{}.method", d.name()),
                        self.detectors.method(d),
                    ));
                }
            }
        }
        out
    }

    /// Checks the policy. Errors name the place, e.g.
    /// `redaction.rules[2].field: pattern "" must not be empty`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (i, r) in self.rules.iter().enumerate() {
            let path = format!("redaction.rules[{i}].field");
            check_pattern(&r.field).map_err(|reason| PolicyError::Pattern {
                path: path.clone(),
                pattern: r.field.chars().take(64).collect(),
                reason,
            })?;
            if let Some(j) = self.rules[..i]
                .iter()
                .position(|o| o.field.eq_ignore_ascii_case(&r.field))
            {
                return Err(PolicyError::DuplicatePattern {
                    path,
                    pattern: r.field.clone(),
                    first: format!("redaction.rules[{j}].field"),
                });
            }
        }
        check_patterns("redaction.content_fields", &self.content_fields)?;
        check_patterns("redaction.allow_fields", &self.allow_fields)?;
        if self.mode == Mode::Denylist {
            let wrong = |path: &str| PolicyError::WrongMode {
                path: path.to_owned(),
                needs: Mode::Allowlist,
                mode: self.mode,
            };
            if !self.allow_fields.is_empty() {
                return Err(wrong("redaction.allow_fields"));
            }
            if self.default_method.is_some() {
                return Err(wrong("redaction.default_method"));
            }
        }
        check_patterns(
            "redaction.detectors.skip_fields",
            &self.detectors.skip_fields,
        )?;
        for d in Detector::ALL {
            let m = self.detectors.method(d);
            if matches!(m, Method::Encrypt | Method::Truncate { .. }) {
                return Err(PolicyError::MethodNotAllowed {
                    path: format!("redaction.detectors.{}.method", d.name()),
                    method: m,
                    reason: "cannot replace a match inside text; use drop, mask, mask(N), hmac or hash",
                });
            }
        }
        self.keys.validate("redaction.keys")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid() {
        Policy::default().validate().unwrap();
        Policy::allowlist(["model"]).validate().unwrap();
    }

    #[test]
    fn yaml_errors_name_the_field() {
        let err = Policy::from_yaml(
            "redaction:\n  rules:\n    - {field: a, method: drop}\n    - {field: b, method: hmac}\n    - {field: c, method: hsah}\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("redaction.rules[2].method") && msg.contains("unknown method \"hsah\""),
            "{msg}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        for yaml in [
            "redaction:\n  mdoe: allowlist\n",
            "redaction:\n  detectors:\n    emial: {enabled: false}\n",
            "redaction:\n  rules:\n    - {field: a, method: drop, extra: 1}\n",
            "redaction: {}\nother: 1\n",
        ] {
            let msg = Policy::from_yaml(yaml).unwrap_err().to_string();
            assert!(msg.contains("unknown field"), "{yaml}: {msg}");
        }
    }

    #[test]
    fn validation_names_the_path() {
        let cases: &[(&str, &str)] = &[
            (
                "redaction:\n  rules:\n    - {field: a, method: drop}\n    - {field: '', method: drop}\n",
                "redaction.rules[1].field: pattern \"\" must not be empty",
            ),
            (
                "redaction:\n  rules:\n    - {field: a, method: drop}\n    - {field: A, method: hash}\n",
                "redaction.rules[1].field: pattern \"A\" is already listed at redaction.rules[0].field",
            ),
            (
                "redaction:\n  allow_fields: [model]\n",
                "redaction.allow_fields is only used when redaction.mode is allowlist; the mode is denylist",
            ),
            (
                "redaction:\n  detectors:\n    email: {method: encrypt}\n",
                "redaction.detectors.email.method: method encrypt cannot replace a match inside text",
            ),
            (
                "redaction:\n  content_fields: [prompt, 'a b']\n",
                "redaction.content_fields[1]: pattern \"a b\" must not contain spaces",
            ),
            (
                "redaction:\n  keys:\n    hmac:\n      active: k2\n      keys:\n        - {id: k1, key_env: X}\n",
                "redaction.keys.hmac.active: active key \"k2\" is not one of the keyring's keys",
            ),
            (
                "redaction:\n  keys:\n    hmac:\n      active: k1\n      keys:\n        - {id: k1, key_env: X, key_file: /k}\n",
                "redaction.keys.hmac.keys[0]: key \"k1\" needs exactly one of",
            ),
            (
                "redaction:\n  keys:\n    hmac:\n      active: k1\n      keys:\n        - {id: k1, key_env: 'A-B'}\n",
                "redaction.keys.hmac.keys[0]: key \"k1\": \"A-B\" is not a valid environment variable name",
            ),
        ];
        for (yaml, want) in cases {
            let msg = Policy::from_yaml(yaml).unwrap_err().to_string();
            assert!(msg.starts_with(want), "got {msg:?}\nwant {want:?}");
        }
    }

    #[test]
    fn key_material_never_printed() {
        let yaml = "redaction:\n  keys:\n    hmac:\n      active: k1\n      keys:\n        - {id: k1, key_hex: 'zz5ec7e7zz'}\n";
        let policy = Policy::from_yaml(yaml).unwrap();
        assert!(!format!("{policy:?}").contains("5ec7e7"));
        let err = policy.keys.load().unwrap_err().to_string();
        assert_eq!(
            err,
            "redaction.keys.hmac.keys[0]: key \"k1\" is not valid hex"
        );
        let yaml = "redaction:\n  keys:\n    hmac:\n      active: k1\n      keys:\n        - {id: k1, key_hex: '5ec7e7'}\n";
        let err = Policy::from_yaml(yaml)
            .unwrap()
            .keys
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 bytes long; at least 32"), "{err}");
        assert!(!err.contains("5ec7e7"));
    }

    #[test]
    fn keys_load_from_every_source() {
        let dir = std::env::temp_dir().join(format!("otel-audit-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let raw = dir.join("raw.key");
        std::fs::write(&raw, [5u8; 32]).unwrap();
        let b64 = dir.join("b64.key");
        std::fs::write(&b64, "BgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgY=\n").unwrap();
        let yaml = format!(
            "redaction:\n  keys:\n    hmac:\n      active: h2\n      keys:\n        - {{id: h1, key_hex: '{}'}}\n        - {{id: h2, key_file: '{}', encoding: raw}}\n        - {{id: h3, key_file: '{}', encoding: base64}}\n        - {{id: h4, key_base64: 'BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc'}}\n    encryption:\n      active: e1\n      keys:\n        - {{id: e1, key_env: OTEL_AUDIT_TEST_NO_SUCH_VAR_1}}\n",
            "11".repeat(32),
            raw.display(),
            b64.display()
        );
        let policy = Policy::from_yaml(&yaml).unwrap();
        let err = policy.keys.load().unwrap_err().to_string();
        assert_eq!(
            err,
            "redaction.keys.encryption.keys[0]: key \"e1\": environment variable OTEL_AUDIT_TEST_NO_SUCH_VAR_1 is not set"
        );
        let hmac = policy
            .keys
            .hmac
            .as_ref()
            .unwrap()
            .load("x", KeyPurpose::Hmac)
            .unwrap();
        assert_eq!(hmac.active_id(), "h2");
        assert_eq!(hmac.key_ids().collect::<Vec<_>>(), ["h1", "h2", "h3", "h4"]);
        let direct = Keyring::hmac("h2", [5u8; 32]).unwrap();
        assert_eq!(
            hmac.hmac_sha256("h2", b"x").unwrap(),
            direct.hmac_sha256("h2", b"x").unwrap()
        );
        let h3 = Keyring::hmac("h3", [6u8; 32]).unwrap();
        assert_eq!(
            hmac.hmac_sha256("h3", b"x").unwrap(),
            h3.hmac_sha256("h3", b"x").unwrap()
        );
        let h4 = Keyring::hmac("h4", [7u8; 32]).unwrap();
        assert_eq!(
            hmac.hmac_sha256("h4", b"x").unwrap(),
            h4.hmac_sha256("h4", b"x").unwrap()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_load_from_the_environment() {
        // `cargo test` sets CARGO_MANIFEST_DIR for the test process; setting a
        // variable here would need `unsafe`, which the crate forbids.
        let Ok(value) = std::env::var("CARGO_MANIFEST_DIR") else {
            return;
        };
        let cfg = KeyringConfig {
            active: "k".into(),
            keys: vec![KeyConfig {
                id: "k".into(),
                key_hex: None,
                key_base64: None,
                key_file: None,
                key_env: Some("CARGO_MANIFEST_DIR".into()),
                encoding: Some(KeyEncoding::Raw),
            }],
        };
        match cfg.load("redaction.keys.hmac", KeyPurpose::Hmac) {
            Ok(ring) => {
                let direct = Keyring::hmac("k", value.as_bytes()).unwrap();
                assert_eq!(
                    ring.hmac_sha256("k", b"x").unwrap(),
                    direct.hmac_sha256("k", b"x").unwrap()
                );
            }
            Err(PolicyError::Key {
                source: KeyError::TooShort { len, .. },
                ..
            }) => assert_eq!(len, value.len()),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn detector_defaults() {
        let d = DetectorsConfig::default();
        assert_eq!(d.method(Detector::Email), Method::MASK);
        assert_eq!(d.method(Detector::ApiKey), Method::Mask { keep_chars: 0 });
    }
}
