//! Errors of the redaction engine: one enum per group. None of them ever
//! carries key material or the value being redacted.

use std::path::PathBuf;

use super::keys::KeyPurpose;
use super::method::{Method, MethodParseError};
use super::policy::{KeyEncoding, Mode};

/// A problem with one key or keyring. Names the key id, never the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key id that cannot be used (it appears in stored rows and inline digests).
    #[error("invalid key id {key_id:?}: {reason}")]
    InvalidId {
        /// The id given (cut to 64 characters).
        key_id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An HMAC key shorter than the minimum.
    #[error("{purpose} key {key_id:?} is {len} bytes long; at least {min} are required")]
    TooShort {
        /// What the key is for.
        purpose: KeyPurpose,
        /// The key's id.
        key_id: String,
        /// Its length in bytes.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// An AES-256 key that is not exactly 32 bytes.
    #[error("{purpose} key {key_id:?} is {len} bytes long; exactly {expected} are required")]
    WrongLength {
        /// What the key is for.
        purpose: KeyPurpose,
        /// The key's id.
        key_id: String,
        /// Its length in bytes.
        len: usize,
        /// The required length.
        expected: usize,
    },
    /// Two keys with the same id.
    #[error("key id {key_id:?} is used twice")]
    Duplicate {
        /// The id.
        key_id: String,
    },
    /// The active key id names no key of the keyring.
    #[error("active key {key_id:?} is not one of the keyring's keys")]
    UnknownActive {
        /// The id.
        key_id: String,
    },
    /// A key entry with no source, or with more than one.
    #[error(
        "key {key_id:?} needs exactly one of key_hex, key_base64, key_file, key_env; {count} are set"
    )]
    Source {
        /// The key's id.
        key_id: String,
        /// How many sources are set.
        count: usize,
    },
    /// `encoding` given for an inline key, whose encoding is in its name.
    #[error("key {key_id:?}: encoding applies only to key_file and key_env")]
    EncodingWithInlineKey {
        /// The key's id.
        key_id: String,
    },
    /// An environment variable name that cannot be one.
    #[error("key {key_id:?}: {var:?} is not a valid environment variable name")]
    InvalidEnvName {
        /// The key's id.
        key_id: String,
        /// The name given.
        var: String,
    },
    /// The environment variable holding the key is not set.
    #[error("key {key_id:?}: environment variable {var} is not set")]
    EnvMissing {
        /// The key's id.
        key_id: String,
        /// The variable.
        var: String,
    },
    /// The environment variable holding the key is not valid Unicode.
    #[error("key {key_id:?}: environment variable {var} is not valid UTF-8")]
    EnvNotUnicode {
        /// The key's id.
        key_id: String,
        /// The variable.
        var: String,
    },
    /// The key file cannot be read.
    #[error("key {key_id:?}: cannot read key file {}", path.display())]
    File {
        /// The key's id.
        key_id: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key text is not valid in its encoding. The decoder's own message is
    /// left out on purpose: it quotes the offending key characters.
    #[error("key {key_id:?} is not valid {encoding}")]
    Decode {
        /// The key's id.
        key_id: String,
        /// The expected encoding.
        encoding: KeyEncoding,
    },
}

/// A redaction policy that cannot be loaded or used. Each variant names the
/// place in the configuration, e.g. `redaction.rules[2].method`.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file cannot be read.
    #[error("cannot read redaction policy {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed, has an unknown field or a value of the wrong type.
    /// The message names the field path and the line.
    #[error("invalid redaction policy: {source}")]
    Yaml {
        /// The parser's error.
        #[source]
        source: serde_norway::Error,
    },
    /// A method's text is invalid.
    #[error("{path}: {source}")]
    Method {
        /// Where.
        path: String,
        /// Why.
        #[source]
        source: MethodParseError,
    },
    /// A method that cannot be used at this place.
    #[error("{path}: method {method} {reason}")]
    MethodNotAllowed {
        /// Where.
        path: String,
        /// The method.
        method: Method,
        /// Why not, and what to use instead.
        reason: &'static str,
    },
    /// A field-name pattern is invalid.
    #[error("{path}: pattern {pattern:?} {reason}")]
    Pattern {
        /// Where.
        path: String,
        /// The pattern (cut to 64 characters).
        pattern: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The same pattern twice in one list.
    #[error("{path}: pattern {pattern:?} is already listed at {first}")]
    DuplicatePattern {
        /// Where.
        path: String,
        /// The pattern.
        pattern: String,
        /// Where it first appears.
        first: String,
    },
    /// A setting that has no effect in the policy's mode.
    #[error("{path} is only used when redaction.mode is {needs}; the mode is {mode}")]
    WrongMode {
        /// Where.
        path: String,
        /// The mode that uses it.
        needs: Mode,
        /// The policy's mode.
        mode: Mode,
    },
    /// The policy uses `hmac` or `encrypt` but no keyring for it was given.
    #[error("{path}: method {method} needs {purpose} keys (redaction.keys.{purpose})")]
    MissingKeyring {
        /// The first place that needs it.
        path: String,
        /// The method.
        method: Method,
        /// Which keyring.
        purpose: KeyPurpose,
    },
    /// A keyring given for one purpose is used for another.
    #[error("{path}: keyring holds {found} keys, expected {expected} keys")]
    KeyPurpose {
        /// Where.
        path: String,
        /// The purpose the place needs.
        expected: KeyPurpose,
        /// The keyring's purpose.
        found: KeyPurpose,
    },
    /// A key or keyring is invalid or cannot be loaded.
    #[error("{path}: {source}")]
    Key {
        /// Where.
        path: String,
        /// Why.
        #[source]
        source: KeyError,
    },
}

/// A failure while sealing, opening or verifying content.
#[derive(Debug, thiserror::Error)]
pub enum RedactError {
    /// No keyring for this purpose is configured.
    #[error("no {purpose} keys are configured")]
    NoKeyring {
        /// Which keyring.
        purpose: KeyPurpose,
    },
    /// A keyring of the wrong purpose was given.
    #[error("expected {expected} keys, got {found} keys")]
    WrongKeyring {
        /// What was needed.
        expected: KeyPurpose,
        /// What was given.
        found: KeyPurpose,
    },
    /// The key id is not in the keyring (a retired key that was removed?).
    #[error("{purpose} key {key_id:?} is not in the keyring")]
    UnknownKey {
        /// Which keyring.
        purpose: KeyPurpose,
        /// The id asked for.
        key_id: String,
    },
    /// A digest without the key id its algorithm needs.
    #[error("digest of {field} is an HMAC but names no key id")]
    MissingKeyId {
        /// The digest's field.
        field: String,
    },
    /// Sealed content with an algorithm this version cannot open.
    #[error("sealed content of {field} uses unsupported algorithm {algorithm:?}")]
    UnsupportedAlgorithm {
        /// The sealed field.
        field: String,
        /// The algorithm (cut to 64 characters).
        algorithm: String,
    },
    /// A nonce of the wrong length.
    #[error("sealed content of {field} has a {len}-byte nonce; AES-256-GCM uses 12")]
    InvalidNonce {
        /// The sealed field.
        field: String,
        /// Its length.
        len: usize,
    },
    /// Authentication failed: wrong key, altered ciphertext, or content moved
    /// from another field.
    #[error(
        "cannot open sealed content of {field} with key {key_id:?}: wrong key, altered data or another field's content"
    )]
    Decrypt {
        /// The sealed field.
        field: String,
        /// The key used.
        key_id: String,
    },
    /// A value too large to seal.
    #[error("value of {field} is {len} bytes; at most {max} can be sealed")]
    TooLarge {
        /// The field.
        field: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The operating system's random number generator failed.
    #[error("cannot draw a random nonce")]
    Random {
        /// The OS error.
        #[source]
        source: getrandom::Error,
    },
}
