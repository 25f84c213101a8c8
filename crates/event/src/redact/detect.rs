//! Detectors of sensitive values inside free text.
//!
//! Regular expressions find candidates; checksums and ranges are validated in
//! code (Luhn for cards, mod-97 for IBANs, area/group/serial for SSNs, octets
//! for IPv4, `std::net` parsing for IPv6). Expressions are compiled once per
//! process. Text in which no detector can match (no `@`, too few digits, ...)
//! is rejected by a single byte scan before any expression runs.

use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;

/// How many detectors there are.
pub const DETECTOR_COUNT: usize = 9;

/// A kind of sensitive value found inside text. Its [`name`](Self::name) is the
/// `detector` of the [`Redaction`](crate::Redaction) records it produces and
/// its key under `redaction.detectors` in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// PEM private key blocks (`-----BEGIN … PRIVATE KEY-----` … `END`).
    PrivateKey,
    /// JSON Web Tokens: three base64url segments, the first starting `eyJ`.
    Jwt,
    /// API keys and tokens with a recognisable prefix (OpenAI/Anthropic `sk-`,
    /// AWS `AKIA`/`ASIA`, GitHub `ghp_`/`github_pat_`, Slack `xox?-`, Stripe,
    /// Google `AIza`).
    ApiKey,
    /// E-mail addresses.
    Email,
    /// International bank account numbers, mod-97 checked.
    Iban,
    /// Payment card numbers: 13–19 digits, Luhn checked.
    PaymentCard,
    /// US social security numbers `NNN-NN-NNNN` in valid ranges.
    UsSsn,
    /// IPv4 and IPv6 addresses.
    IpAddress,
    /// Telephone numbers, international (`+…`) and common national formats.
    Phone,
}

impl Detector {
    /// Every detector, in priority order: when matches overlap, the earlier
    /// detector wins.
    pub const ALL: [Detector; DETECTOR_COUNT] = [
        Detector::PrivateKey,
        Detector::Jwt,
        Detector::ApiKey,
        Detector::Email,
        Detector::Iban,
        Detector::PaymentCard,
        Detector::UsSsn,
        Detector::IpAddress,
        Detector::Phone,
    ];

    /// The detector's name in policies and redaction records.
    pub const fn name(self) -> &'static str {
        match self {
            Detector::PrivateKey => "private_key",
            Detector::Jwt => "jwt",
            Detector::ApiKey => "api_key",
            Detector::Email => "email",
            Detector::Iban => "iban",
            Detector::PaymentCard => "payment_card",
            Detector::UsSsn => "us_ssn",
            Detector::IpAddress => "ip_address",
            Detector::Phone => "phone",
        }
    }

    /// Whether the detector finds credentials (whose default mask shows only
    /// the non-secret type prefix).
    pub const fn is_secret(self) -> bool {
        matches!(
            self,
            Detector::PrivateKey | Detector::Jwt | Detector::ApiKey
        )
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Detector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Detector {
    type Err = crate::ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const NAMES: &[&str] = &[
            "private_key",
            "jwt",
            "api_key",
            "email",
            "iban",
            "payment_card",
            "us_ssn",
            "ip_address",
            "phone",
        ];
        Detector::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| crate::ParseEnumError {
                kind: "detector",
                value: s.chars().take(64).collect(),
                expected: NAMES,
            })
    }
}

/// One sensitive value found in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was found.
    pub detector: Detector,
    /// Where, in bytes of the text.
    pub range: Range<usize>,
    /// A non-secret part of the match that may be shown (the `sk-proj-` of an
    /// API key, the `RSA PRIVATE KEY` label of a PEM block), in bytes of the text.
    pub hint: Option<Range<usize>>,
}

struct Compiled {
    pem_begin: Regex,
    pem_end: Regex,
    jwt: Regex,
    api_key: Regex,
    email: Regex,
    iban: Regex,
    card: Regex,
    ssn: Regex,
    ipv4: Regex,
    ipv6: Regex,
    phone: Regex,
}

// `(?-u:\b)` is an ASCII word boundary: it keeps the fast DFA engines usable on
// non-ASCII text, where a Unicode `\b` would force the slow engine.
const B: &str = r"(?-u:\b)";

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let re = |p: &str| Regex::new(&p.replace("\\B", B)).expect("built-in detector pattern");
        Compiled {
            pem_begin: re(r"-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----"),
            pem_end: re(r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"),
            jwt: re(r"\BeyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"),
            api_key: re(concat!(
                r"\B(?:",
                r"sk-[A-Za-z0-9_-]{20,}",
                r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
                r"|(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\B",
                r"|gh[pousr]_[A-Za-z0-9]{36,255}",
                r"|github_pat_[A-Za-z0-9_]{22,255}",
                r"|xox[abprs]-[A-Za-z0-9-]{10,}",
                r"|AIza[0-9A-Za-z_-]{35}",
                r")",
            )),
            email: re(
                r"\B[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\B",
            ),
            iban: re(r"\B[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\B"),
            card: re(r"\B[0-9](?:[ -]?[0-9]){12,18}\B"),
            ssn: re(r"\B[0-9]{3}-[0-9]{2}-[0-9]{4}\B"),
            ipv4: re(r"\B(?:[0-9]{1,3}\.){3}[0-9]{1,3}\B"),
            ipv6: re(concat!(
                r"(?:[0-9A-Fa-f]{0,4}:){2,6}[0-9]{1,3}(?:\.[0-9]{1,3}){3}",
                r"|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
            )),
            phone: re(concat!(
                // international: +CC then 1–7 groups, optionally parenthesised
                r"\+[1-9][0-9]{0,3}(?:[ .-]?(?:\([0-9]{1,5}\)|[0-9]{1,5})){1,7}",
                // North American: (555) 123-4567, 555-123-4567, 555.123.4567, 555 123 4567, 1-800-555-1234
                r"|(?:\B1[ .-])?(?:\([0-9]{3}\) ?|\B[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}\B",
                // national with trunk 0: 020 7946 0958, 06 12 34 56 78, 0301234567
                r"|\B0[0-9]{1,4}(?:[ -]?[0-9]{2,4}){2,4}\B",
            )),
        }
    })
}

/// Byte-level facts that let most text skip most detectors.
struct Stats {
    len: usize,
    digits: usize,
    colons: usize,
    dots: usize,
    at: bool,
    upper: bool,
    dashes5: bool,
    letters: bool,
}

impl Stats {
    fn of(text: &str) -> Self {
        let mut s = Stats {
            len: text.len(),
            digits: 0,
            colons: 0,
            dots: 0,
            at: false,
            upper: false,
            dashes5: false,
            letters: false,
        };
        let mut dash_run = 0u8;
        for b in text.bytes() {
            match b {
                b'0'..=b'9' => s.digits += 1,
                b':' => s.colons += 1,
                b'.' => s.dots += 1,
                b'@' => s.at = true,
                b'A'..=b'Z' => {
                    s.upper = true;
                    s.letters = true;
                }
                b'a'..=b'z' => s.letters = true,
                _ => {}
            }
            if b == b'-' {
                dash_run = dash_run.saturating_add(1);
                if dash_run >= 5 {
                    s.dashes5 = true;
                }
            } else {
                dash_run = 0;
            }
        }
        s
    }

    /// The detectors (bit [`Detector::index`]) whose expression could match:
    /// the shortest text each can match. A JWT has two dots, the shortest
    /// key form is `xoxb-` and ten more, an IBAN is at least 12 characters,
    /// IPv4 needs three dots and IPv6 two colons.
    fn candidates(&self) -> u16 {
        let bit = |d: Detector, may: bool| u16::from(may) << d.index();
        bit(Detector::PrivateKey, self.dashes5)
            | bit(Detector::Jwt, self.upper && self.dots >= 2)
            | bit(
                Detector::ApiKey,
                self.len >= 15 && self.letters && self.digits > 0,
            )
            | bit(Detector::Email, self.at)
            | bit(
                Detector::Iban,
                self.len >= 12 && self.upper && self.digits >= 2,
            )
            | bit(Detector::PaymentCard, self.digits >= 13)
            | bit(Detector::UsSsn, self.digits >= 9)
            | bit(
                Detector::IpAddress,
                (self.digits >= 4 && self.dots >= 3) || self.colons >= 2,
            )
            | bit(Detector::Phone, self.digits >= 8)
    }
}

/// The set of detectors, one bit each at [`Detector::index`].
pub(crate) fn mask(enabled: impl IntoIterator<Item = Detector>) -> u16 {
    enabled.into_iter().fold(0, |m, d| m | 1 << d.index())
}

/// The shortest text of a number (see `Redactor::may_detect_number`)
/// that [`may_find`] can accept: its quick test needs an `@`, two colons,
/// two dots or five dashes in a row (none in a number's text), eight
/// digits, or twelve bytes.
pub(crate) const MIN_NUMBER_FINDING: usize = 8;

/// Whether any detector of `enabled` (a [`mask`]) could match in `text`:
/// false for most values (ids, model names, numbers), which then need no scan.
pub(crate) fn may_find(text: &str, enabled: u16) -> bool {
    // Most values are short (ids, model names, numbers): a word-wise test
    // rules them out without the byte loop below (≈ 20 instructions a byte).
    if text.len() < SHORT && !short_may_find(text.as_bytes()) {
        return false;
    }
    let s = Stats::of(text);
    // A superset of `candidates`' conditions, cheaper to test: most
    // values fail it and skip the per-detector bits.
    let any = s.at | s.dashes5 | (s.colons >= 2) | (s.dots >= 2) | (s.digits >= 8) | (s.len >= 12);
    any && s.candidates() & enabled != 0
}

/// Texts shorter than this pass [`may_find`]'s quick test only by an `@`,
/// two colons, two dots, five dashes in a row or eight digits (its length
/// condition needs 12 bytes), which [`short_may_find`] tests a word at a time.
const SHORT: usize = 12;

/// [`may_find`]'s quick test for a text shorter than [`SHORT`]: the same
/// answer as counting with [`Stats::of`], from the text as one 128-bit word
/// (bytes past its end are zero, which matches none of the characters).
fn short_may_find(bytes: &[u8]) -> bool {
    const ONES: u128 = u128::from_le_bytes([1; 16]);
    const HIGH: u128 = ONES * 0x80;
    const LOW: u128 = ONES * 0x7f;
    let mut buf = [0u8; 16];
    buf[..bytes.len()].copy_from_slice(bytes);
    let w = u128::from_le_bytes(buf);
    // The high bit of each byte equal to `c` (exact: no carry crosses a
    // byte, as the low seven bits are added apart from the eighth).
    let equal = |c: u8| {
        let x = w ^ (ONES * u128::from(c));
        !(((x & LOW) + LOW) | x) & HIGH
    };
    let more_than_one = |m: u128| m & m.wrapping_sub(1) != 0;
    let dashes = equal(b'-');
    let dashes5 = dashes & (dashes >> 8) & (dashes >> 16) & (dashes >> 24) & (dashes >> 32) != 0;
    if equal(b'@') != 0 || dashes5 || more_than_one(equal(b':')) || more_than_one(equal(b'.')) {
        return true;
    }
    if bytes.len() < 8 {
        return false;
    }
    // ASCII digits: at least 0x30 and below 0x3a, high bit clear.
    let low = w & LOW;
    let digits = (low + ONES * 0x50) & !(low + ONES * 0x46) & !w & HIGH;
    // Eight digits among at most eleven bytes: at most three other bytes,
    // found by clearing the lowest bit that many times (`count_ones` costs
    // ≈ 50 instructions without the POPCNT instruction, the x86-64 baseline).
    let mut others = !digits & (HIGH >> (8 * (16 - bytes.len())));
    for _ in 8..bytes.len() {
        others &= others.wrapping_sub(1);
    }
    others == 0
}

/// Finds every sensitive value in `text`, with all detectors enabled.
///
/// ```
/// use otel_audit_event::redact::{Detector, detect};
/// let found = detect("mail bob@example.org or call +44 20 7946 0958");
/// let kinds: Vec<_> = found.iter().map(|f| f.detector).collect();
/// assert_eq!(kinds, [Detector::Email, Detector::Phone]);
/// assert!(detect("release 1.2.3 shipped on 2024-06-01, build 20240601").is_empty());
/// ```
pub fn detect(text: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    find_into(text, mask(Detector::ALL), &mut out);
    out
}

/// Appends the findings of the `enabled` detectors (a [`mask`]) to `out`,
/// sorted by position, without overlaps.
pub(crate) fn find_into(text: &str, enabled: u16, out: &mut Vec<Finding>) {
    let stats = Stats::of(text);
    let may = stats.candidates() & enabled;
    // Most values can match no detector: leave before touching the
    // compiled expressions or the findings.
    if may == 0 {
        return;
    }
    let c = compiled();
    let start = out.len();
    for d in Detector::ALL {
        if may & (1 << d.index()) == 0 {
            continue;
        }
        let plain = |ok: bool, r: Range<usize>| ok.then_some((r, None));
        match d {
            Detector::PrivateKey => private_keys(c, text, out, start),
            Detector::Jwt => simple(text, &c.jwt, d, out, start, |s, r| {
                let hint = r.start..r.start + 3;
                valid_jwt(&s[r.clone()]).then_some((r, Some(hint)))
            }),
            Detector::ApiKey => simple(text, &c.api_key, d, out, start, |s, r| {
                api_key(&s[r.clone()]).map(|n| (r.clone(), Some(r.start..r.start + n)))
            }),
            Detector::Email => simple(text, &c.email, d, out, start, |_, r| Some((r, None))),
            Detector::Iban => simple(text, &c.iban, d, out, start, |s, r| {
                plain(valid_iban(&s[r.clone()]), r)
            }),
            Detector::PaymentCard => simple(text, &c.card, d, out, start, |s, r| {
                card(s, r).map(|r| (r, None))
            }),
            Detector::UsSsn => simple(text, &c.ssn, d, out, start, |s, r| {
                plain(!dashed_neighbour(s, &r) && valid_ssn(&s[r.clone()]), r)
            }),
            Detector::IpAddress => {
                if stats.colons >= 2 {
                    simple(text, &c.ipv6, d, out, start, |s, r| {
                        plain(valid_ipv6(s, &r), r)
                    });
                }
                simple(text, &c.ipv4, d, out, start, |s, r| {
                    plain(!dotted_neighbour(s, &r) && valid_ipv4(&s[r.clone()]), r)
                });
            }
            Detector::Phone => simple(text, &c.phone, d, out, start, |s, r| {
                phone(s, r).map(|r| (r, None))
            }),
        }
    }
    out[start..].sort_by_key(|f| f.range.start);
}

fn overlaps(found: &[Finding], r: &Range<usize>) -> bool {
    found
        .iter()
        .any(|f| f.range.start < r.end && r.start < f.range.end)
}

/// Runs one expression over `text`; `check` validates a candidate and returns
/// the accepted range (possibly shorter) and hint. After a rejected candidate
/// the search resumes at the candidate's next group (after its first
/// separator), so a bad candidate cannot hide a good match inside it, and each
/// position is retried a bounded number of times.
fn simple(
    text: &str,
    re: &Regex,
    d: Detector,
    out: &mut Vec<Finding>,
    start: usize,
    check: impl Fn(&str, Range<usize>) -> Option<(Range<usize>, Option<Range<usize>>)>,
) {
    let mut pos = 0;
    while pos <= text.len() {
        let Some(m) = re.find_at(text, pos) else {
            break;
        };
        let r = m.range();
        // The check may shorten a candidate that ran on into the next token,
        // so overlaps with earlier (higher-priority) findings are tested after it.
        let accepted = if mask_remnant(text, &r) {
            None
        } else {
            check(text, r.clone()).filter(|(range, _)| !overlaps(&out[start..], range))
        };
        match accepted {
            Some((range, hint)) => {
                pos = range.end.max(r.start + 1);
                out.push(Finding {
                    detector: d,
                    range,
                    hint,
                });
            }
            None => {
                let next_group = m
                    .as_str()
                    .bytes()
                    .skip(1)
                    .position(|b| !b.is_ascii_alphanumeric())
                    .map(|i| r.start + i + 2);
                pos = next_group.unwrap_or(r.end).max(r.start + 1);
            }
        }
        while pos < text.len() && !text.is_char_boundary(pos) {
            pos += 1;
        }
        if r.is_empty() && pos == r.start {
            pos += 1;
        }
    }
}

fn private_keys(c: &Compiled, text: &str, out: &mut Vec<Finding>, start: usize) {
    let mut from = 0;
    while let Some(caps) = c.pem_begin.captures_at(text, from) {
        let (Some(all), Some(label)) = (caps.get(0), caps.get(1)) else {
            break;
        };
        // A block without its END line (a cut-off value) is redacted to the end
        // of the text: fail closed.
        let end = c
            .pem_end
            .find_at(text, all.end())
            .map_or(text.len(), |m| m.end());
        let r = all.start()..end;
        if !overlaps(&out[start..], &r) {
            out.push(Finding {
                detector: Detector::PrivateKey,
                range: r,
                hint: Some(label.range()),
            });
        }
        from = end;
    }
}

fn valid_jwt(s: &str) -> bool {
    // `eyJ` is base64url for `{"`; the payload must also be a real segment.
    s.split('.').nth(1).is_some_and(|p| p.len() >= 2)
}

/// The length of the non-secret prefix of an API key, or `None` when the
/// match does not look like a random credential.
fn api_key(s: &str) -> Option<usize> {
    const PREFIXES: &[&str] = &[
        "sk-proj-",
        "sk-svcacct-",
        "sk-admin-",
        "sk-ant-",
        "sk_live_",
        "sk_test_",
        "rk_live_",
        "rk_test_",
        "github_pat_",
        "sk-",
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "xoxa-",
        "xoxb-",
        "xoxp-",
        "xoxr-",
        "xoxs-",
        "AKIA",
        "ASIA",
        "ABIA",
        "ACCA",
        "AIza",
    ];
    let prefix = PREFIXES.iter().find(|p| s.starts_with(**p))?;
    let body = &s[prefix.len()..];
    // Real keys are random: they mix letters and digits. This keeps
    // `sk-learn-style-names` and similar identifiers out.
    let random =
        body.bytes().any(|b| b.is_ascii_digit()) && body.bytes().any(|b| b.is_ascii_alphabetic());
    random.then_some(prefix.len())
}

/// The candidate is exactly the visible tail of one of our own mask markers
/// (`[ip_address:****::17]`): scanning redacted text again must not redact
/// the tail a second time.
fn mask_remnant(s: &str, r: &Range<usize>) -> bool {
    if s.as_bytes().get(r.end) != Some(&b']') || !s[..r.start].ends_with("****") {
        return false;
    }
    let head = &s[..r.start - 4];
    let Some(open) = head.rfind('[') else {
        return false;
    };
    let Some((name, _hint)) = head[open + 1..].split_once(':') else {
        return false;
    };
    head.len() - open <= 80 && Detector::ALL.iter().any(|d| d.name() == name)
}

/// The accepted range of a card candidate: the longest prefix ending at a
/// group that is a card and not a piece of a longer number. (The expression
/// may run on into a following number: `5555555555554444 123-45-6789`.)
fn card(s: &str, r: Range<usize>) -> Option<Range<usize>> {
    let cand = s[r.clone()].as_bytes();
    let ends = (1..=cand.len())
        .rev()
        .filter(|&e| e == cand.len() || !cand[e].is_ascii_digit());
    for e in ends {
        let sub = r.start..r.start + e;
        if !card_fragment(s, &sub) && valid_card(&s[sub.clone()]) {
            return Some(sub);
        }
    }
    None
}

/// The candidate is a phone number's tail (`+4930…`) or one piece of a longer
/// grouped number (`DE89 3704 0044 …`, `… 1111 2222`).
fn card_fragment(s: &str, r: &Range<usize>) -> bool {
    let b = s.as_bytes();
    if r.start > 0 && b[r.start - 1] == b'+' {
        return true;
    }
    let sep_before =
        r.start >= 2 && matches!(b[r.start - 1], b' ' | b'-') && b[r.start - 2].is_ascii_digit();
    let sep_after =
        r.end + 1 < b.len() && matches!(b[r.end], b' ' | b'-') && b[r.end + 1].is_ascii_digit();
    let grouped = s[r.clone()].bytes().any(|c| c == b' ' || c == b'-');
    grouped && (sep_before || sep_after)
}

/// Whether `s` (digits with optional spaces or dashes) is a payment card
/// number: 13–19 digits, a major-network first digit (2–6), written ungrouped
/// or in the printed layouts (groups of 4 with a shorter last group, or
/// 4-6-5 / 4-6-4), Luhn valid.
pub(crate) fn valid_card(s: &str) -> bool {
    let mut digits = [0u8; 19];
    let mut n = 0;
    let mut sep = None;
    let mut groups = [0usize; 19];
    let mut g = 0;
    for b in s.bytes() {
        match b {
            b'0'..=b'9' => {
                if n == 19 {
                    return false;
                }
                digits[n] = b - b'0';
                n += 1;
                groups[g] += 1;
            }
            b' ' | b'-' => {
                // mixed separators (`4111-1111 1111`) are not how cards are written
                if sep.is_some_and(|s| s != b) {
                    return false;
                }
                sep = Some(b);
                g += 1;
            }
            _ => return false,
        }
    }
    if !(13..=19).contains(&n) || !(2..=6).contains(&digits[0]) {
        return false;
    }
    let groups = &groups[..=g];
    let layout_ok = groups.len() == 1
        || matches!(groups, [4, 6, 5] | [4, 6, 4])
        || (groups[..groups.len() - 1].iter().all(|&x| x == 4)
            && (1..=4).contains(&groups[groups.len() - 1]));
    layout_ok && luhn(&digits[..n])
}

/// The Luhn checksum over decimal digits.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// `NNN-NN-NNNN` outside the never-issued ranges: area 000, 666 and 900–999,
/// group 00, serial 0000.
pub(crate) fn valid_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 11 || b[3] != b'-' || b[6] != b'-' {
        return false;
    }
    let num = |r: Range<usize>| s[r].parse::<u32>().ok();
    let (Some(area), Some(group), Some(serial)) = (num(0..3), num(4..6), num(7..11)) else {
        return false;
    };
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// The match is part of a longer dashed number (`12-123-45-6789`).
fn dashed_neighbour(s: &str, r: &Range<usize>) -> bool {
    let b = s.as_bytes();
    let before = r.start >= 2 && b[r.start - 1] == b'-' && b[r.start - 2].is_ascii_digit();
    let after = r.end + 1 < b.len() && b[r.end] == b'-' && b[r.end + 1].is_ascii_digit();
    before || after
}

/// The match is part of a longer dotted number (`1.2.3.4.5`, a version).
fn dotted_neighbour(s: &str, r: &Range<usize>) -> bool {
    let b = s.as_bytes();
    let before = r.start >= 2 && b[r.start - 1] == b'.' && b[r.start - 2].is_ascii_digit();
    let after = r.end + 1 < b.len() && b[r.end] == b'.' && b[r.end + 1].is_ascii_digit();
    before || after
}

/// Four decimal octets, each 0–255, without leading zeros.
pub(crate) fn valid_ipv4(s: &str) -> bool {
    let mut n = 0;
    for part in s.split('.') {
        n += 1;
        let ok = !part.is_empty()
            && part.len() <= 3
            && !(part.len() > 1 && part.starts_with('0'))
            && part.parse::<u16>().is_ok_and(|v| v <= 255);
        if !ok {
            return false;
        }
    }
    n == 4
}

fn valid_ipv6(s: &str, r: &Range<usize>) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':' || c == b'.';
    if (r.start > 0 && word(b[r.start - 1]))
        || (r.end < b.len() && (b[r.end].is_ascii_alphanumeric() || b[r.end] == b'_'))
    {
        return false;
    }
    let cand = &s[r.clone()];
    // A real address has a decimal digit somewhere; this keeps Rust paths such
    // as `Add::add` and words like `cafe::face` out.
    if !cand.bytes().any(|c| c.is_ascii_digit()) {
        return false;
    }
    Ipv6Addr::from_str(cand).is_ok_and(|ip| !ip.is_unspecified() && !ip.is_loopback())
}

/// The accepted range of a phone candidate: a plausible number of digits, not
/// part of a longer number, date or version. An international candidate that
/// ran on into following numbers (`+44 20 7946 0958 10.1.2.3`) is cut back to
/// its longest valid prefix ending at a group.
fn phone(s: &str, r: Range<usize>) -> Option<Range<usize>> {
    let b = s.as_bytes();
    if r.start > 0 {
        let p = b[r.start - 1];
        if p.is_ascii_alphanumeric() || p == b'+' || p == b'_' {
            return None;
        }
    }
    // one piece of a longer dotted, dashed or grouped number
    // (`2024-0123456789`, `DE89 3704 0044 0532 0130 01`)
    // (a `+` starts a new number even right after another one)
    if r.start >= 2
        && b[r.start] != b'+'
        && matches!(b[r.start - 1], b'.' | b'-' | b' ')
        && b[r.start - 2].is_ascii_digit()
    {
        return None;
    }
    let ok_end = |end: usize| {
        let digit_next = end < b.len() && b[end].is_ascii_digit();
        let number_next =
            end + 1 < b.len() && matches!(b[end], b'.' | b'-') && b[end + 1].is_ascii_digit();
        !digit_next && !number_next
    };
    let cand = &s[r.clone()];
    if cand.starts_with('+') {
        // group ends, longest first
        let mut digits = 0;
        let mut best = None;
        for (i, c) in cand.bytes().enumerate() {
            if c.is_ascii_digit() {
                digits += 1;
                let at_end = i + 1 == cand.len() || !cand.as_bytes()[i + 1].is_ascii_digit();
                let end = r.start + i + 1;
                let end = if cand.as_bytes().get(i + 1) == Some(&b')') {
                    end + 1
                } else {
                    end
                };
                if at_end && (8..=15).contains(&digits) && ok_end(end) {
                    best = Some(r.start..end);
                }
            }
        }
        return best;
    }
    if !ok_end(r.end) {
        return None;
    }
    let digits = cand.bytes().filter(u8::is_ascii_digit).count();
    let ok = if cand.starts_with('0') {
        (10..=11).contains(&digits)
    } else {
        // North American, optionally after the country code `1`; the two
        // separators of `555-123-4567` must agree.
        let core = match cand.as_bytes() {
            [b'1', b' ' | b'.' | b'-', ..] => &cand[2..],
            _ => cand,
        };
        let mut seps = core.bytes().filter(|c| !c.is_ascii_digit());
        let agree = core.starts_with('(') || {
            let (a, b2, extra) = (seps.next(), seps.next(), seps.next());
            a.is_some() && a == b2 && extra.is_none()
        };
        agree && core.bytes().filter(u8::is_ascii_digit).count() == 10
    };
    ok.then_some(r)
}

/// IBAN lengths by country (the SWIFT registry); unknown countries must be
/// 15–34 characters.
fn iban_length(country: &str) -> Option<usize> {
    const LENGTHS: &[(&str, usize)] = &[
        ("AD", 24),
        ("AE", 23),
        ("AL", 28),
        ("AT", 20),
        ("AZ", 28),
        ("BA", 20),
        ("BE", 16),
        ("BG", 22),
        ("BH", 22),
        ("BI", 27),
        ("BR", 29),
        ("BY", 28),
        ("CH", 21),
        ("CR", 22),
        ("CY", 28),
        ("CZ", 24),
        ("DE", 22),
        ("DJ", 27),
        ("DK", 18),
        ("DO", 28),
        ("EE", 20),
        ("EG", 29),
        ("ES", 24),
        ("FI", 18),
        ("FK", 18),
        ("FO", 18),
        ("FR", 27),
        ("GB", 22),
        ("GE", 22),
        ("GI", 23),
        ("GL", 18),
        ("GR", 27),
        ("GT", 28),
        ("HR", 21),
        ("HU", 28),
        ("IE", 22),
        ("IL", 23),
        ("IQ", 23),
        ("IS", 26),
        ("IT", 27),
        ("JO", 30),
        ("KW", 30),
        ("KZ", 20),
        ("LB", 28),
        ("LC", 32),
        ("LI", 21),
        ("LT", 20),
        ("LU", 20),
        ("LV", 21),
        ("LY", 25),
        ("MC", 27),
        ("MD", 24),
        ("ME", 22),
        ("MK", 19),
        ("MN", 20),
        ("MR", 27),
        ("MT", 31),
        ("MU", 30),
        ("NI", 28),
        ("NL", 18),
        ("NO", 15),
        ("OM", 23),
        ("PK", 24),
        ("PL", 28),
        ("PS", 29),
        ("PT", 25),
        ("QA", 29),
        ("RO", 24),
        ("RS", 22),
        ("RU", 33),
        ("SA", 24),
        ("SC", 31),
        ("SD", 18),
        ("SE", 24),
        ("SI", 19),
        ("SK", 24),
        ("SM", 27),
        ("SO", 23),
        ("ST", 25),
        ("SV", 28),
        ("TL", 23),
        ("TN", 24),
        ("TR", 26),
        ("UA", 29),
        ("VA", 22),
        ("VG", 24),
        ("XK", 20),
        ("YE", 30),
    ];
    LENGTHS.iter().find(|(c, _)| *c == country).map(|&(_, n)| n)
}

/// Whether `s` (upper-case, optionally grouped by single spaces) is an IBAN:
/// right length for its country and mod-97 remainder 1.
pub(crate) fn valid_iban(s: &str) -> bool {
    let mut buf = [0u8; 34];
    let mut n = 0;
    for b in s.bytes() {
        if b == b' ' {
            continue;
        }
        if n == 34 || !b.is_ascii_alphanumeric() {
            return false;
        }
        buf[n] = b;
        n += 1;
    }
    let iban = &buf[..n];
    if n < 15 {
        return false;
    }
    let country = std::str::from_utf8(&iban[..2]).unwrap_or("");
    match iban_length(country) {
        Some(len) if len != n => return false,
        _ => {}
    }
    let mut rem: u32 = 0;
    for &c in iban[4..].iter().chain(&iban[..4]) {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A' + 10)) % 97,
            _ => return false,
        };
    }
    rem == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(Detector, String)> {
        let found = detect(text);
        // The quick test callers use to skip the scan never skips a finding.
        if !found.is_empty() {
            assert!(may_find(text, mask(Detector::ALL)), "{text:?} skipped");
        }
        for f in &found {
            assert!(may_find(text, mask([f.detector])), "{text:?} skipped");
        }
        found
            .into_iter()
            .map(|f| (f.detector, text[f.range].to_owned()))
            .collect()
    }

    /// The word-wise test of short texts answers as the byte loop does.
    #[test]
    fn the_short_test_agrees_with_the_byte_loop() {
        let alphabet = [
            '@', ':', '.', '-', '0', '5', '9', '/', ';', 'a', 'Z', ' ', '\0', '\x7f', 'é', '٣', '€',
        ];
        let quick = |t: &str| {
            let s = Stats::of(t);
            s.at | s.dashes5 | (s.colons >= 2) | (s.dots >= 2) | (s.digits >= 8) | (s.len >= 12)
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut checked = 0;
        while checked < 300_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 12) as usize;
            let mut r = seed >> 8;
            // Mostly digits, so that runs of eight are common.
            let t: String = (0..n)
                .map(|_| {
                    let c = if r.is_multiple_of(3) {
                        alphabet[(r / 3 % 17) as usize]
                    } else {
                        '7'
                    };
                    r = r.rotate_right(7) ^ 0x9e37_79b9;
                    c
                })
                .collect();
            if t.len() >= SHORT {
                continue;
            }
            assert_eq!(short_may_find(t.as_bytes()), quick(&t), "{t:?}");
            checked += 1;
        }
        for t in [
            "",
            "user-4711",
            "gpt-4o-mini",
            "a@b",
            "1.2.3",
            "12345678",
            "1234567",
            "-----",
            "::",
        ] {
            assert_eq!(short_may_find(t.as_bytes()), quick(t), "{t:?}");
        }
    }

    fn only(text: &str, d: Detector, hit: &str) {
        assert_eq!(kinds(text), vec![(d, hit.to_owned())], "in {text:?}");
    }

    fn none(text: &str) {
        assert_eq!(kinds(text), vec![], "in {text:?}");
    }

    #[test]
    fn emails() {
        only(
            "contact alice.smith+tag@mail.example.co.uk today",
            Detector::Email,
            "alice.smith+tag@mail.example.co.uk",
        );
        only("<bob@example.org>", Detector::Email, "bob@example.org");
        none("user@localhost, @handle, pkg@1.2.3 and a@b");
    }

    #[test]
    fn phones() {
        for p in [
            "+1 (555) 123-4567",
            "+44 20 7946 0958",
            "+33 1 23 45 67 89",
            "+49-30-1234567",
            "+14155552671",
            "(555) 123-4567",
            "555-123-4567",
            "555.123.4567",
            "1-800-555-1234",
            "1 (800) 555-1234",
            "020 7946 0958",
            "06 12 34 56 78",
        ] {
            only(&format!("call {p} now"), Detector::Phone, p);
        }
        // two numbers in a row are two hits
        let hits = detect("phone +1 415 555 0132 +44 20 7946 0958 now");
        assert_eq!(hits.len(), 2, "{hits:?}");
        for text in [
            "on 2024-01-15 at 10:30:00",
            "2024-01-15T10:30:00Z",
            "version 1.2.3 and 10.0.19045.3803",
            "v2.14.1-rc.3",
            "count 12345 and 1234567",
            "order 42, port 8080, 3.14159",
            "555-123.4567",
            "+12 34",
            "20240115",
            "1718000000",
        ] {
            none(text);
        }
    }

    #[test]
    fn payment_cards() {
        for c in [
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "30569309025904",
        ] {
            only(&format!("card: {c}."), Detector::PaymentCard, c);
        }
        none("card 4111 1111 1111 1112"); // Luhn fails
        none("id 1234567812345678"); // Luhn fails
        none("ts 1718000000000000000"); // not a card network
        none("4111-1111 1111 1111"); // mixed separators
        none("4111 11 1111 1111 111"); // not a printed layout
        none("9 4111 1111 1111 1111"); // part of a longer grouped number
        only(
            "Amex 3782 822463 10005",
            Detector::PaymentCard,
            "3782 822463 10005",
        );
        assert!(valid_card("4012888888881881"));
        assert!(!valid_card("4012888888881882"));
    }

    #[test]
    fn ssns() {
        only("ssn 123-45-6789.", Detector::UsSsn, "123-45-6789");
        only("ssn 899-01-0001", Detector::UsSsn, "899-01-0001");
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "999-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            none(&format!("ssn {bad}"));
        }
        none("12-123-45-6789");
    }

    #[test]
    fn ip_addresses() {
        only("from 203.0.113.77:443", Detector::IpAddress, "203.0.113.77");
        only("from 10.0.0.1", Detector::IpAddress, "10.0.0.1");
        only(
            "addr 2001:db8:85a3::8a2e:370:7334 ok",
            Detector::IpAddress,
            "2001:db8:85a3::8a2e:370:7334",
        );
        only(
            "peer fe80::1ff:fe23:4567:890a",
            Detector::IpAddress,
            "fe80::1ff:fe23:4567:890a",
        );
        only(
            "mapped ::ffff:192.0.2.128",
            Detector::IpAddress,
            "::ffff:192.0.2.128",
        );
        none("version 1.2.3.4.5");
        none("256.1.1.1 and 01.02.03.04");
        none("Add::add std::io ::1 :: 12:30:45 00:1a:2b:3c:4d:5e");
    }

    #[test]
    fn jwts() {
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        only(&format!("Bearer {jwt}"), Detector::Jwt, jwt);
        none("eyJust kidding. not.a.jwt");
    }

    #[test]
    fn api_keys() {
        for k in [
            "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
            "sk-ant-api03-Zx9yW8vU7tS6rQ5pO4nM3lK2jI1hG0fE",
            "sk-1234567890abcdefghijKLMN",
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAY34FZKBOKMUTVV7A",
            "ghp_1234567890abcdefghijklmnopqrstuvwxyz",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            "AIzaSyA1234567890abcdefghijklmnopqrstuv",
        ] {
            only(&format!("key={k}"), Detector::ApiKey, k);
        }
        none("task-scheduler sk-learn-style-package-name-here risk-assessment-model-v2");
        none("AKIA1234 is too short; xoxb-short");
        // The shortest forms each expression accepts, alone in a value (the
        // length prefilter must not skip them).
        for k in ["xoxb-a123456789", "AKIA0123456789ABCDEF"] {
            only(k, Detector::ApiKey, k);
        }
        only("NO9386011117947", Detector::Iban, "NO9386011117947");
        let jwt = "eyJhb.eyJzd.x";
        only(jwt, Detector::Jwt, jwt);
    }

    #[test]
    fn api_key_hint() {
        let text = "k sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z";
        let f = &detect(text)[0];
        assert_eq!(&text[f.hint.clone().unwrap()], "sk-proj-");
    }

    #[test]
    fn private_keys() {
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA1234\n-----END RSA PRIVATE KEY-----";
        only(&format!("key:\n{pem}\nend"), Detector::PrivateKey, pem);
        let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA";
        only(cut, Detector::PrivateKey, cut);
        let pgp = "-----BEGIN PGP PRIVATE KEY BLOCK-----\nabc\n-----END PGP PRIVATE KEY BLOCK-----";
        only(pgp, Detector::PrivateKey, pgp);
        none("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
        none("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----");
    }

    #[test]
    fn ibans() {
        only(
            "IBAN DE89 3704 0044 0532 0130 00 please",
            Detector::Iban,
            "DE89 3704 0044 0532 0130 00",
        );
        only(
            "to GB29NWBK60161331926819.",
            Detector::Iban,
            "GB29NWBK60161331926819",
        );
        only(
            "FR1420041010050500013M02606",
            Detector::Iban,
            "FR1420041010050500013M02606",
        );
        none("DE89 3704 0044 0532 0130 01"); // mod-97 fails
        none("GB29NWBK6016133192681"); // wrong length for GB
    }

    #[test]
    fn overlapping_matches_resolve_by_priority() {
        // the card wins over the phone pattern; the IPv6 wins over its IPv4 tail
        let text = "4111 1111 1111 1111 and ::ffff:192.0.2.128";
        let k = kinds(text);
        assert_eq!(k.len(), 2, "{k:?}");
        assert_eq!(k[0].0, Detector::PaymentCard);
        assert_eq!(k[1].0, Detector::IpAddress);
    }

    #[test]
    fn clean_text_finds_nothing() {
        none("The quick brown fox jumps over the lazy dog. Ünïcödé text, 日本語, 3 apples.");
        none("");
    }

    #[test]
    fn detector_names_round_trip() {
        for d in Detector::ALL {
            assert_eq!(d.name().parse::<Detector>().unwrap(), d);
        }
        assert!("emails".parse::<Detector>().is_err());
    }
}
