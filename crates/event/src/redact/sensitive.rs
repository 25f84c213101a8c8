//! [`Sensitive`]: a value that never prints itself.

use std::fmt;

/// What [`Sensitive`] prints instead of its value.
pub const REDACTED_PLACEHOLDER: &str = "[redacted]";

/// A value that must not appear in logs, traces or error messages.
///
/// `Debug` and `Display` print `[redacted]`, whatever the format flags; the
/// value is reached only through [`expose`](Self::expose), so every use is
/// visible in review. There is deliberately no `Serialize`: a `Sensitive` value
/// cannot end up in a serialised event by accident. The audit layer can still
/// hash or encrypt it through [`Redactor::apply`](super::Redactor::apply).
///
/// ```
/// use otel_audit_event::Sensitive;
/// let card = Sensitive::new(String::from("4111 1111 1111 1111"));
/// assert_eq!(format!("{card} {card:?} {card:#?}"), "[redacted] [redacted] [redacted]");
/// assert_eq!(card.expose().len(), 19);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(transparent)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    /// Wraps a value.
    pub const fn new(value: T) -> Self {
        Sensitive(value)
    }

    /// The value. Every call site is a place where the value is handled in clear.
    pub const fn expose(&self) -> &T {
        &self.0
    }

    /// The value, mutably.
    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }

    /// Unwraps the value.
    pub fn into_inner(self) -> T {
        self.0
    }

    /// Transforms the value without exposing it.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Sensitive<U> {
        Sensitive(f(self.0))
    }
}

impl<T> From<T> for Sensitive<T> {
    fn from(value: T) -> Self {
        Sensitive(value)
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED_PLACEHOLDER)
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED_PLACEHOLDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Sensitive::new("hunter2-secret");
        for text in [
            format!("{s}"),
            format!("{s:?}"),
            format!("{s:#?}"),
            format!("{s:>40}"),
            format!("{:?}", Some(s)),
            format!("{:?}", vec![s, s]),
        ] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains(REDACTED_PLACEHOLDER));
        }
        assert_eq!(*s.expose(), "hunter2-secret");
        assert_eq!(s.map(str::len).into_inner(), 14);
    }

    #[test]
    fn deserialises_transparently() {
        let s: Sensitive<String> = serde_json::from_str("\"k\"").unwrap();
        assert_eq!(s.expose(), "k");
    }
}
