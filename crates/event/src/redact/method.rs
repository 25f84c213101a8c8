//! Redaction methods and their text form: `drop | mask | mask(N) | hmac | hash |
//! encrypt | truncate(N)`.
//!
//! This file depends on `core`/`std` only, so that the `#[audit]` proc macro can
//! validate `#[audit(redact(arg = "truncate(20)"))]` at compile time with exactly
//! the same rules as the YAML policy loader.

use std::fmt;
use std::str::FromStr;

/// How many trailing characters `mask` keeps when no `N` is given.
pub const DEFAULT_MASK_KEEP_CHARS: u32 = 4;

/// The largest `N` accepted by `mask(N)` and `truncate(N)`.
pub const MAX_METHOD_CHARS: u32 = 1 << 20;

/// The accepted spellings, for error messages and documentation.
pub const METHOD_SYNTAX: &str = "drop, mask, mask(N), hmac, hash, encrypt or truncate(N)";

/// What to do with a sensitive value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Remove the value entirely.
    Drop,
    /// Replace every character with `*` except the last `keep_chars` (never more
    /// than half of the value, so a short value is never shown in full).
    Mask {
        /// Trailing characters (not bytes) left visible.
        keep_chars: u32,
    },
    /// Replace the value by its HMAC-SHA256 under the active HMAC key.
    Hmac,
    /// Replace the value by its plain SHA-256 (no key: short values can be
    /// recovered by brute force; use only when chosen deliberately).
    Hash,
    /// Encrypt the value with AES-256-GCM under the active encryption key.
    Encrypt,
    /// Keep only the first `max_chars` characters (not bytes).
    Truncate {
        /// Characters (not bytes) kept.
        max_chars: u32,
    },
}

impl Method {
    /// `mask` with the default number of visible characters.
    pub const MASK: Method = Method::Mask {
        keep_chars: DEFAULT_MASK_KEEP_CHARS,
    };

    /// The method's name without its argument (`mask`, `truncate`, ...).
    pub const fn name(&self) -> &'static str {
        match self {
            Method::Drop => "drop",
            Method::Mask { .. } => "mask",
            Method::Hmac => "hmac",
            Method::Hash => "hash",
            Method::Encrypt => "encrypt",
            Method::Truncate { .. } => "truncate",
        }
    }

    /// Whether the method leaves (part of) the value readable, so detectors
    /// still need to scan what remains.
    pub const fn keeps_text(&self) -> bool {
        matches!(self, Method::Mask { .. } | Method::Truncate { .. })
    }
}

impl fmt::Display for Method {
    /// The canonical text form; `mask` is always written with its argument.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Mask { keep_chars } => write!(f, "mask({keep_chars})"),
            Method::Truncate { max_chars } => write!(f, "truncate({max_chars})"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for Method {
    type Err = MethodParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_method(s)
    }
}

/// Why a method's text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodParseError {
    /// The text is empty.
    Empty,
    /// Not one of the method names.
    Unknown {
        /// The name given (cut to 64 characters).
        method: String,
    },
    /// `truncate` without `(N)`.
    MissingArgument {
        /// The method.
        method: &'static str,
    },
    /// An argument on a method that takes none (`hmac(3)`).
    UnexpectedArgument {
        /// The method.
        method: &'static str,
    },
    /// An argument that is not a whole number in range, or a missing `)`.
    InvalidArgument {
        /// The method.
        method: &'static str,
        /// The argument given (cut to 64 characters).
        argument: String,
        /// What is expected.
        reason: &'static str,
    },
}

impl fmt::Display for MethodParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodParseError::Empty => write!(f, "empty method: expected {METHOD_SYNTAX}"),
            MethodParseError::Unknown { method } => {
                write!(f, "unknown method {method:?}: expected {METHOD_SYNTAX}")
            }
            MethodParseError::MissingArgument { method } => {
                write!(f, "method {method} needs a length: {method}(N)")
            }
            MethodParseError::UnexpectedArgument { method } => {
                write!(f, "method {method} takes no argument")
            }
            MethodParseError::InvalidArgument {
                method,
                argument,
                reason,
            } => write!(
                f,
                "method {method}: invalid argument {argument:?}: {reason}"
            ),
        }
    }
}

impl std::error::Error for MethodParseError {}

fn cut(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Parses a method's text form: `drop`, `mask`, `mask(N)`, `hmac`, `hash`,
/// `encrypt` or `truncate(N)`. Names are lower-case; spaces around the name and
/// inside the parentheses are ignored; `N` is a whole number of characters
/// (at most [`MAX_METHOD_CHARS`]; at least 1 for `truncate`).
///
/// ```
/// use otel_audit_event::redact::{Method, parse_method};
/// assert_eq!(parse_method("truncate(20)").unwrap(), Method::Truncate { max_chars: 20 });
/// assert_eq!("mask".parse::<Method>().unwrap(), Method::Mask { keep_chars: 4 });
/// assert_eq!(
///     parse_method("hsah").unwrap_err().to_string(),
///     "unknown method \"hsah\": expected drop, mask, mask(N), hmac, hash, encrypt or truncate(N)"
/// );
/// ```
pub fn parse_method(s: &str) -> Result<Method, MethodParseError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(MethodParseError::Empty);
    }
    let (name, arg) = match s.find('(') {
        Some(open) => (s[..open].trim_end(), Some(&s[open + 1..])),
        None => (s, None),
    };
    let method: &'static str = match name {
        "drop" => "drop",
        "mask" => "mask",
        "hmac" => "hmac",
        "hash" => "hash",
        "encrypt" => "encrypt",
        "truncate" => "truncate",
        _ => {
            return Err(MethodParseError::Unknown { method: cut(name) });
        }
    };
    let number = match arg {
        None => None,
        Some(rest) => {
            let Some(inner) = rest.strip_suffix(')') else {
                return Err(MethodParseError::InvalidArgument {
                    method,
                    argument: cut(rest),
                    reason: "expected a closing ')'",
                });
            };
            let inner = inner.trim();
            let valid =
                !inner.is_empty() && inner.len() <= 8 && inner.bytes().all(|b| b.is_ascii_digit());
            let n = if valid {
                inner.parse::<u32>().ok()
            } else {
                None
            };
            match n {
                Some(n) if n <= MAX_METHOD_CHARS => Some(n),
                _ => {
                    return Err(MethodParseError::InvalidArgument {
                        method,
                        argument: cut(inner),
                        reason: "expected a whole number of characters from 0 to 1048576",
                    });
                }
            }
        }
    };
    match (method, number) {
        ("drop", None) => Ok(Method::Drop),
        ("hmac", None) => Ok(Method::Hmac),
        ("hash", None) => Ok(Method::Hash),
        ("encrypt", None) => Ok(Method::Encrypt),
        ("mask", None) => Ok(Method::MASK),
        ("mask", Some(n)) => Ok(Method::Mask { keep_chars: n }),
        ("truncate", None) => Err(MethodParseError::MissingArgument { method }),
        ("truncate", Some(0)) => Err(MethodParseError::InvalidArgument {
            method,
            argument: "0".into(),
            reason: "truncate(0) keeps nothing; use drop",
        }),
        ("truncate", Some(n)) => Ok(Method::Truncate { max_chars: n }),
        (method, Some(_)) => Err(MethodParseError::UnexpectedArgument { method }),
        (_, None) => Err(MethodParseError::Unknown { method: cut(name) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let cases = [
            ("drop", Method::Drop),
            ("hmac", Method::Hmac),
            ("hash", Method::Hash),
            ("encrypt", Method::Encrypt),
            ("mask", Method::Mask { keep_chars: 4 }),
            ("mask(0)", Method::Mask { keep_chars: 0 }),
            ("mask( 6 )", Method::Mask { keep_chars: 6 }),
            (" truncate(20) ", Method::Truncate { max_chars: 20 }),
            ("truncate (1)", Method::Truncate { max_chars: 1 }),
        ];
        for (text, want) in cases {
            assert_eq!(parse_method(text).unwrap(), want, "{text:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for m in [
            Method::Drop,
            Method::Hmac,
            Method::Hash,
            Method::Encrypt,
            Method::Mask { keep_chars: 7 },
            Method::Truncate { max_chars: 300 },
        ] {
            assert_eq!(m.to_string().parse::<Method>().unwrap(), m);
        }
        assert_eq!(Method::MASK.to_string(), "mask(4)");
    }

    #[test]
    fn rejects_bad_text() {
        let err = |s: &str| parse_method(s).unwrap_err();
        assert_eq!(err(""), MethodParseError::Empty);
        assert!(matches!(err("hsah"), MethodParseError::Unknown { .. }));
        assert!(matches!(err("HMAC"), MethodParseError::Unknown { .. }));
        assert!(matches!(
            err("truncate"),
            MethodParseError::MissingArgument { .. }
        ));
        assert!(matches!(
            err("truncate(0)"),
            MethodParseError::InvalidArgument { .. }
        ));
        assert!(matches!(
            err("truncate(-1)"),
            MethodParseError::InvalidArgument { .. }
        ));
        assert!(matches!(
            err("truncate(2x)"),
            MethodParseError::InvalidArgument { .. }
        ));
        assert!(matches!(
            err("truncate(20"),
            MethodParseError::InvalidArgument { .. }
        ));
        assert!(matches!(
            err("mask()"),
            MethodParseError::InvalidArgument { .. }
        ));
        assert!(matches!(
            err("mask(99999999999)"),
            MethodParseError::InvalidArgument { .. }
        ));
        assert!(matches!(
            err("mask(2000000)"),
            MethodParseError::InvalidArgument { .. }
        ));
        assert!(matches!(
            err("hmac(3)"),
            MethodParseError::UnexpectedArgument { .. }
        ));
        assert!(matches!(
            err("drop()"),
            MethodParseError::InvalidArgument { .. }
        ));
        assert_eq!(
            err("truncate").to_string(),
            "method truncate needs a length: truncate(N)"
        );
    }
}
