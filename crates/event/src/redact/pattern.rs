//! Field-name patterns: exact names and `*` globs, ASCII case-insensitive.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The longest pattern accepted.
pub(crate) const MAX_PATTERN_BYTES: usize = 256;

/// Checks a pattern's text. `*` matches any run of characters (dots included).
pub(crate) fn check_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern.is_empty() {
        return Err("must not be empty");
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err("is longer than 256 bytes");
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    Ok(())
}

/// One glob, split at its `*`s.
#[derive(Debug, Clone)]
struct Glob {
    /// The literal pieces between stars, lower-cased.
    parts: Vec<Box<str>>,
    starts_with_star: bool,
    ends_with_star: bool,
    /// The shortest name that can match (the literal parts' lengths).
    min_len: usize,
}

impl Glob {
    fn new(pattern: &str) -> Self {
        let lower = pattern.to_ascii_lowercase();
        let parts: Vec<Box<str>> = lower
            .split('*')
            .filter(|p| !p.is_empty())
            .map(Into::into)
            .collect();
        Glob {
            min_len: parts.iter().map(|p| p.len()).sum(),
            parts,
            starts_with_star: lower.starts_with('*'),
            ends_with_star: lower.ends_with('*'),
        }
    }

    fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        if name.len() < self.min_len {
            return false;
        }
        // The common shape `*.suffix` (every name ending so).
        if let [part] = self.parts.as_slice()
            && self.starts_with_star
            && !self.ends_with_star
        {
            return ends_with_ci(name, part.as_bytes());
        }
        let mut pos = 0;
        let n = self.parts.len();
        if n == 0 {
            return true; // only stars
        }
        for (i, part) in self.parts.iter().enumerate() {
            let part = part.as_bytes();
            let first = i == 0;
            let last = i == n - 1;
            if first && !self.starts_with_star {
                if !starts_with_ci(name, part) {
                    return false;
                }
                pos = part.len();
                if last && !self.ends_with_star {
                    return pos == name.len();
                }
                continue;
            }
            if last && !self.ends_with_star {
                return name.len() >= pos + part.len()
                    && ends_with_ci(name, part)
                    && name.len() - part.len() >= pos;
            }
            match find_ci(name, part, pos) {
                Some(at) => pos = at + part.len(),
                None => return false,
            }
        }
        true
    }
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

fn ends_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[hay.len() - needle.len()..].eq_ignore_ascii_case(needle)
}

fn find_ci(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.len() > hay.len() {
        return None;
    }
    (from..=hay.len() - needle.len())
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

/// FNV-1a: field names are short and not attacker-chosen in bulk, and
/// this runs for every recorded value, where SipHash showed in profiles.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A set of exact names and globs; matching never allocates.
#[derive(Debug, Clone, Default)]
pub(crate) struct PatternSet {
    exact: HashSet<Box<str>, BuildHasherDefault<Fnv>>,
    globs: Vec<Glob>,
}

impl PatternSet {
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = PatternSet::default();
        for p in patterns {
            set.insert(p);
        }
        set
    }

    fn insert(&mut self, pattern: &str) {
        if pattern.contains('*') {
            self.globs.push(Glob::new(pattern));
        } else {
            self.exact.insert(pattern.to_ascii_lowercase().into());
        }
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        let exact = if self.exact.is_empty() {
            false
        } else if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.exact.iter().any(|e| e.eq_ignore_ascii_case(name))
        } else {
            self.exact.contains(name)
        };
        exact || self.globs.iter().any(|g| g.matches(name))
    }
}

/// One pattern on its own (for ordered rules).
#[derive(Debug, Clone)]
pub(crate) struct Pattern(PatternSet);

impl Pattern {
    pub(crate) fn new(pattern: &str) -> Self {
        Pattern(PatternSet::new([pattern]))
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        self.0.matches(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let cases: &[(&str, &str, bool)] = &[
            ("gen_ai.*.messages", "gen_ai.input.messages", true),
            ("gen_ai.*.messages", "gen_ai.output.messages", true),
            ("gen_ai.*.messages", "gen_ai.messages", false),
            ("gen_ai.*.messages", "gen_ai.input.messages.x", false),
            (
                "http.request.header.*",
                "http.request.header.authorization",
                true,
            ),
            ("http.request.header.*", "HTTP.Request.Header.Cookie", true),
            ("http.request.header.*", "http.request.body", false),
            ("*.prompt", "arg.prompt", true),
            ("*.prompt", "prompt", false),
            ("*.prompt", "arg.prompts", false),
            ("*", "anything", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-x-c-y-b", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            ("*token*", "x.token.y", true),
        ];
        for &(p, name, want) in cases {
            assert_eq!(Pattern::new(p).matches(name), want, "{p} vs {name}");
        }
    }

    #[test]
    fn exact_names_are_case_insensitive() {
        let set = PatternSet::new(["prompt", "gen_ai.prompt"]);
        assert!(set.matches("prompt"));
        assert!(set.matches("Prompt"));
        assert!(!set.matches("prompts"));
        assert!(!PatternSet::default().matches("x"));
    }

    #[test]
    fn pattern_checks() {
        assert!(check_pattern("gen_ai.*").is_ok());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("a b").is_err());
        assert!(check_pattern(&"x".repeat(300)).is_err());
    }
}
